"""_lib.py — finding libtierload.so and declaring its C types and functions for ctypes.

The library is looked for, in order: the path in TIERLOAD_LIBRARY, a libtierload.so next to this
package, then the loader's search path (ctypes.util.find_library / "libtierload.so.<ABI>"). The
structs below have the layouts of TL_ABI_VERSION ABI: a library of another ABI is refused.
"""
import ctypes
import ctypes.util
import os

c_u8, c_u32, c_u64, c_i32, c_i64 = (ctypes.c_uint8, ctypes.c_uint32, ctypes.c_uint64,
                                    ctypes.c_int32, ctypes.c_int64)
c_bool, c_int, c_uint, c_size, c_double = (ctypes.c_bool, ctypes.c_int, ctypes.c_uint,
                                           ctypes.c_size_t, ctypes.c_double)
c_char_p, c_void_p, POINTER = ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER

ABI = 1  # TL_ABI_VERSION these declarations follow
TL_MAX_DIMS = 8
TL_COMP_COUNT = 6
TL_TIER_COUNT = 5
TL_PLAN_MAX_DEVICES = 65
TL_DEVICE_NAME_MAX = 32
NOT_FOUND = ctypes.c_size_t(-1).value
ALL_LAYERS = NOT_FOUND


def _candidates():
    env = os.environ.get("TIERLOAD_LIBRARY")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    for name in ("libtierload.so", "libtierload.so.%d" % ABI):
        p = os.path.join(here, name)
        if os.path.exists(p):
            yield p
    found = ctypes.util.find_library("tierload")
    if found:
        yield found
    yield "libtierload.so.%d" % ABI
    yield "libtierload.so"


def _load():
    errors = []
    for cand in _candidates():
        try:
            lib = ctypes.CDLL(cand)
        except OSError as e:
            errors.append("%s: %s" % (cand, e))
            continue
        lib.tl_abi_version.restype = ctypes.c_uint
        got = lib.tl_abi_version()
        if got == ABI:
            return lib
        errors.append("%s: ABI %d, these bindings are for ABI %d" % (cand, got, ABI))
    raise ImportError("tierload: cannot load libtierload.so (set TIERLOAD_LIBRARY to its path): "
                      + "; ".join(errors))


class TensorInfo(ctypes.Structure):
    _fields_ = [("name", c_char_p), ("dtype", c_int), ("n_dims", c_u32),
                ("shape", c_i64 * TL_MAX_DIMS), ("file", c_u32), ("offset", c_u64),
                ("nbytes", c_u64), ("n_elements", c_u64), ("component", c_int),
                ("layer", c_i32), ("layer_key_len", c_u32)]


class FileInfo(ctypes.Structure):
    _fields_ = [("path", c_char_p), ("format", c_int), ("version", c_i32), ("size", c_u64),
                ("data_offset", c_u64), ("alignment", c_u32), ("n_tensors", c_u64)]


class ModelOptions(ctypes.Structure):
    _fields_ = [("size", c_u32), ("map_flags", c_uint), ("writable", c_bool),
                ("prefixes", POINTER(c_char_p)), ("components", c_char_p),
                ("file_components", POINTER(c_char_p))]


class MemStats(ctypes.Structure):
    _fields_ = [("rss", c_u64), ("rss_anon", c_u64), ("rss_file", c_u64), ("rss_shmem", c_u64),
                ("uss", c_u64), ("peak_rss", c_u64), ("mem_total", c_u64),
                ("mem_available", c_u64), ("has_cgroup", c_bool), ("cgroup_max", c_u64),
                ("cgroup_current", c_u64)]


class MemSpan(ctypes.Structure):
    _fields_ = [("start", MemStats), ("end", MemStats), ("rss_anon_peak", c_u64),
                ("rss_file_peak", c_u64), ("rss_peak", c_u64), ("samples", c_u64)]


PROGRESS_FN = ctypes.CFUNCTYPE(c_bool, c_void_p, c_u64, c_u64)


class LoadOptions(ctypes.Structure):
    _fields_ = [("size", c_u32), ("mode", c_int), ("convert", c_bool), ("dtype", c_int),
                ("threads", c_uint), ("staging_size", c_u64), ("staging_count", c_uint),
                ("evict", c_bool), ("verify", c_bool), ("accept_views", c_bool),
                ("populate", c_bool), ("no_hugepages", c_bool), ("progress", PROGRESS_FN),
                ("progress_user", c_void_p), ("sample_interval", c_double),
                ("tensors", POINTER(c_size)), ("n_tensors", c_size), ("dest", c_void_p),
                ("dest_user", c_void_p), ("align", c_u32), ("hugepages", c_bool),
                ("dest_fresh", c_bool), ("type_rules", c_char_p)]


class LoadedTensor(ctypes.Structure):
    _fields_ = [("data", c_void_p), ("nbytes", c_u64), ("dtype", c_int), ("view", c_bool),
                ("converted", c_bool)]


class LoadFile(ctypes.Structure):
    _fields_ = [("path", c_char_p), ("mode", c_int), ("reason", c_char_p),
                ("direct_fallback", c_bool), ("uring", c_bool), ("size", c_u64), ("bytes", c_u64),
                ("seconds", c_double), ("residency_before", c_double),
                ("page_cache_before", c_u64), ("page_cache_after", c_u64), ("evicted", c_bool)]


class LoadStats(ctypes.Structure):
    _fields_ = [("bytes", c_u64), ("bytes_out", c_u64), ("dest_bytes", c_u64),
                ("staging_bound", c_u64), ("staging_used", c_u64), ("threads", c_uint),
                ("seconds", c_double), ("read_seconds", c_double),
                ("page_cache_before", c_u64), ("page_cache_after", c_u64), ("mem", MemSpan)]


class PlanPart(ctypes.Structure):
    _fields_ = [("bytes", c_u64), ("other_bytes", c_u64), ("matrix_bytes", c_u64),
                ("layers", POINTER(c_u64)), ("n_layers", c_size), ("cap_layers", c_size)]


class PlanSummary(ctypes.Structure):
    _fields_ = [("comp", PlanPart * TL_COMP_COUNT)]


class PlanDevice(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * TL_DEVICE_NAME_MAX), ("is_gpu", c_bool),
                ("total", c_u64), ("free", c_u64)]


class PlanOptions(ctypes.Structure):
    _fields_ = [("size", c_u32), ("backend", c_char_p), ("max_vram", c_char_p),
                ("headroom", c_u64), ("reserve", c_char_p), ("phases", c_char_p),
                ("output_size", c_char_p), ("clip_on_cpu", c_bool), ("vae_on_cpu", c_bool),
                ("controlnet_on_cpu", c_bool), ("offload_to_cpu", c_bool), ("steps", c_u32),
                ("vae_bytes_per_voxel", c_u64), ("offload", c_u32), ("phase_only", c_u32),
                ("layer_split", c_u32), ("row_split", c_u32), ("links", c_char_p),
                ("steps2", c_u32), ("overrides", c_char_p), ("type_rules", c_char_p)]


class SessionOptions(ctypes.Structure):
    _fields_ = [("size", c_u32), ("host_budget", c_u64), ("host_headroom", c_u64),
                ("pinned_cap", c_u64), ("spill_dir", c_char_p), ("spill_threshold", c_u64),
                ("policy", c_int), ("threads", c_uint), ("staging_size", c_u64),
                ("staging_count", c_uint), ("device_budgets", POINTER(c_u64)),
                ("n_device_budgets", c_size), ("no_async", c_bool),
                ("no_zero_copy", c_bool), ("event_cap", c_size), ("no_events", c_bool),
                ("progress", PROGRESS_FN), ("progress_user", c_void_p),
                ("convert", c_bool), ("dtype", c_int), ("type_rules", c_char_p)]


class SessionPart(ctypes.Structure):
    _fields_ = [("tier", c_int), ("device", c_void_p), ("dptr", c_u64), ("host", c_void_p),
                ("offset", c_u64), ("nbytes", c_u64), ("row_begin", c_u64), ("row_end", c_u64)]


class SessionTensor(ctypes.Structure):
    _fields_ = [("index", c_size), ("info", POINTER(TensorInfo)), ("n_parts", c_u32),
                ("parts", POINTER(SessionPart))]


class SessionDeviceStats(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * 32), ("budget", c_u64), ("used", c_u64),
                ("peak", c_u64), ("pinned", c_bool)]


class SessionStats(ctypes.Structure):
    _fields_ = [("moved", (c_u64 * TL_TIER_COUNT) * TL_TIER_COUNT), ("bytes_moved", c_u64),
                ("loads", c_u64), ("drops", c_u64), ("spills", c_u64), ("evictions", c_u64),
                ("prefetch_hits", c_u64), ("prefetch_misses", c_u64),
                ("prefetch_skipped", c_u64), ("oom_recoveries", c_u64), ("host_used", c_u64),
                ("host_peak", c_u64), ("host_budget", c_u64), ("spill_used", c_u64),
                ("spill_peak", c_u64), ("pinned_used", c_u64), ("pinned_peak", c_u64),
                ("pinned_cap", c_u64), ("staging_bound", c_u64), ("n_devices", c_size),
                ("devices", SessionDeviceStats * TL_PLAN_MAX_DEVICES),
                ("acquire_waits", c_u64), ("acquire_timeouts", c_u64),
                ("acquire_cancels", c_u64), ("lora_loads", c_u64), ("lora_reloads", c_u64),
                ("lora_max_error", ctypes.c_double), ("lora_device_merges", c_u64)]


class SessionEvent(ctypes.Structure):
    _fields_ = [("t", c_double), ("kind", c_int), ("component", c_int), ("layer", c_i32),
                ("from_", c_int), ("to", c_int), ("device", c_i32), ("bytes", c_u64)]


class SessionStep(ctypes.Structure):
    _fields_ = [("component", c_int), ("layer_begin", c_size), ("layer_end", c_size),
                ("with_other", c_bool)]


class SessionLog(ctypes.Structure):
    _fields_ = [("first", c_u64), ("next", c_u64), ("dropped", c_u64), ("cap", c_size)]


class WarmStats(ctypes.Structure):
    _fields_ = [("bound", c_u64), ("held", c_u64), ("regions", c_u64), ("held_peak", c_u64),
                ("taken", c_u64), ("takes", c_u64), ("released", c_u64)]


class SimSpec(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * TL_DEVICE_NAME_MAX), ("capacity", c_u64),
                ("bandwidth", c_double), ("latency", c_double)]


class DeviceInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char * TL_DEVICE_NAME_MAX), ("desc", ctypes.c_char * 96),
                ("kind", c_int), ("total", c_u64), ("free", c_u64), ("host_pointer", c_bool),
                ("async_", c_bool), ("alignment", c_u32), ("pinned", c_bool)]


TL_LORA_REPORT_NAMES = 8


class LoraReport(ctypes.Structure):
    _fields_ = [("n_modules", c_size), ("n_matched", c_size), ("n_unmatched", c_size),
                ("unmatched", (ctypes.c_char * 128) * TL_LORA_REPORT_NAMES)]


class SpillOptions(ctypes.Structure):
    _fields_ = [("size", c_u32), ("dir", c_char_p), ("chunk_size", c_u64)]


def _declare(lib):
    st = c_int  # tl_status
    P = POINTER
    sigs = {
        "tl_version": (c_char_p, []),
        "tl_status_name": (c_char_p, [c_int]),
        "tl_last_error": (c_char_p, []),
        "tl_free": (None, [c_void_p]),
        "tl_dtype_name": (c_char_p, [c_int]),
        "tl_dtype_from_name": (c_int, [c_char_p]),
        "tl_component_name": (c_char_p, [c_int]),
        "tl_component_from_name": (c_int, [c_char_p]),
        "tl_tier_name": (c_char_p, [c_int]),
        "tl_load_mode_from_name": (c_int, [c_char_p]),
        "tl_load_mode_name": (c_char_p, [c_int]),
        "tl_parse_map_flags": (st, [c_char_p, P(c_uint)]),
        "tl_model_options_init": (None, [P(ModelOptions)]),
        "tl_model_open": (st, [P(c_char_p), c_size, P(ModelOptions), P(c_void_p)]),
        "tl_model_close": (None, [c_void_p]),
        "tl_model_file_count": (c_size, [c_void_p]),
        "tl_model_file": (P(FileInfo), [c_void_p, c_size]),
        "tl_model_tensor_count": (c_size, [c_void_p]),
        "tl_model_tensor": (P(TensorInfo), [c_void_p, c_size]),
        "tl_model_find": (c_size, [c_void_p, c_char_p]),
        "tl_model_tensor_data": (c_void_p, [c_void_p, c_size]),
        "tl_model_tensor_data_mut": (c_void_p, [c_void_p, c_size]),
        "tl_model_tensor_patched": (c_bool, [c_void_p, c_size]),
        "tl_model_tensor_unpatch": (st, [c_void_p, c_size]),
        "tl_model_tensor_read": (st, [c_void_p, c_size, c_u64, c_void_p, c_u64]),
        "tl_model_layer_count": (c_size, [c_void_p, c_int]),
        "tl_model_layer_key": (c_char_p, [c_void_p, c_int, c_size]),
        "tl_model_layer_find": (c_size, [c_void_p, c_int, c_char_p]),
        "tl_model_file_residency": (st, [c_void_p, c_size, P(c_double)]),
        "tl_model_advise": (st, [c_void_p, c_uint]),
        "tl_model_check_files": (st, [c_void_p]),
        "tl_memstats_read": (st, [P(MemStats), c_size]),
        "tl_warm_pool_set": (None, [c_u64]),
        "tl_warm_pool_stats": (None, [P(WarmStats), c_size]),
        "tl_load_options_init": (None, [P(LoadOptions)]),
        "tl_model_load": (st, [c_void_p, P(LoadOptions), P(c_void_p)]),
        "tl_load_result_destroy": (None, [c_void_p]),
        "tl_load_result_tensor": (P(LoadedTensor), [c_void_p, c_size]),
        "tl_load_result_tensor_count": (c_size, [c_void_p]),
        "tl_load_result_file": (P(LoadFile), [c_void_p, c_size]),
        "tl_load_result_file_count": (c_size, [c_void_p]),
        "tl_load_result_stats": (P(LoadStats), [c_void_p]),
        "tl_load_result_notes": (c_char_p, [c_void_p]),
        "tl_plan_summary_init": (None, [P(PlanSummary)]),
        "tl_plan_summary_clear": (None, [P(PlanSummary)]),
        "tl_plan_summary_from_model": (st, [c_void_p, c_int, P(PlanSummary)]),
        "tl_plan_parse_devices": (st, [c_char_p, P(PlanDevice), c_size, P(c_size)]),
        "tl_plan_devices_from_registry": (st, [P(PlanDevice), c_size, P(c_size), P(c_size)]),
        "tl_plan_options_init": (None, [P(PlanOptions)]),
        "tl_plan_create": (st, [P(PlanSummary), P(PlanDevice), c_size, P(PlanOptions),
                                P(c_void_p)]),
        "tl_plan_create_for_model": (st, [c_void_p, c_int, P(PlanDevice), c_size,
                                          P(PlanOptions), P(c_void_p)]),
        "tl_plan_override_find": (c_size, [c_void_p, c_char_p]),
        "tl_plan_destroy": (None, [c_void_p]),
        "tl_plan_feasible": (c_bool, [c_void_p]),
        "tl_plan_error": (c_char_p, [c_void_p]),
        "tl_plan_check": (st, [c_void_p]),
        "tl_plan_to_json": (st, [c_void_p, P(c_void_p)]),
        "tl_plan_to_text": (st, [c_void_p, P(c_void_p)]),
        "tl_plan_host_bytes": (c_u64, [c_void_p]),
        "tl_plan_device_count": (c_size, [c_void_p]),
        "tl_plan_device_of": (P(PlanDevice), [c_void_p, c_size]),
        "tl_device_sim_add": (st, [c_char_p]),
        "tl_device_name": (c_char_p, [c_void_p]),
        "tl_parse_sim_spec": (st, [c_char_p, P(SimSpec), c_size, P(c_size)]),
        "tl_device_sim_create": (st, [P(SimSpec), P(c_void_p)]),
        "tl_device_register": (st, [c_void_p]),
        "tl_device_unregister": (st, [c_void_p]),
        "tl_device_retain": (None, [c_void_p]),
        "tl_device_release": (None, [c_void_p]),
        "tl_device_find": (st, [c_char_p, P(c_void_p)]),
        "tl_device_list": (c_size, [P(c_void_p), c_size]),
        "tl_device_list_release": (None, [P(c_void_p), c_size]),
        "tl_device_describe": (st, [c_void_p, P(DeviceInfo), c_size]),
        "tl_device_kind_name": (c_char_p, [c_int]),
        "tl_device_copy_from": (st, [c_void_p, c_void_p, c_u64, c_u64]),
        "tl_device_ggml_discover": (st, [c_char_p, P(c_size)]),
        "tl_device_ggml_reason": (c_char_p, []),
        "tl_lora_open": (st, [c_char_p, P(c_void_p)]),
        "tl_lora_close": (None, [c_void_p]),
        "tl_lora_module_count": (c_size, [c_void_p]),
        "tl_lora_match": (st, [c_void_p, c_void_p, P(LoraReport), c_size]),
        "tl_lora_set_create": (st, [c_void_p, c_void_p, P(c_void_p)]),
        "tl_lora_set_destroy": (None, [c_void_p]),
        "tl_lora_set_add": (st, [c_void_p, c_void_p, ctypes.c_float, P(LoraReport),
                             c_size]),
        "tl_lora_set_remove": (st, [c_void_p, c_void_p]),
        "tl_lora_set_scale": (st, [c_void_p, c_void_p, ctypes.c_float]),
        "tl_lora_set_create_at_load": (st, [c_void_p, c_u32, P(c_void_p)]),
        "tl_session_set_dtype": (st, [c_void_p, c_size, c_int]),
        "tl_session_options_init": (None, [P(SessionOptions)]),
        "tl_session_create": (st, [c_void_p, c_void_p, P(SessionOptions), P(c_void_p)]),
        "tl_session_destroy": (st, [c_void_p]),
        "tl_session_acquire": (st, [c_void_p, c_int, c_size, c_size, c_bool, P(c_void_p)]),
        "tl_session_acquire_wait": (st, [c_void_p, c_int, c_size, c_size, c_bool, c_u32,
                                         P(c_void_p)]),
        "tl_session_cancel": (st, [c_void_p]),
        "tl_acquired_count": (c_size, [c_void_p]),
        "tl_acquired_tensor": (P(SessionTensor), [c_void_p, c_size]),
        "tl_session_release": (st, [c_void_p, c_void_p]),
        "tl_session_prefetch": (st, [c_void_p, c_int, c_size, c_size, c_bool]),
        "tl_session_set_schedule": (st, [c_void_p, P(SessionStep), c_size]),
        "tl_session_set_budget": (st, [c_void_p, c_char_p, c_u64]),
        "tl_session_set_reserve": (st, [c_void_p, c_int, c_u64]),
        "tl_session_set_priority": (st, [c_void_p, c_int]),
        "tl_session_acquire_tensors": (st, [c_void_p, P(c_size), c_size, c_u32, P(c_void_p)]),
        "tl_session_prefetch_tensors": (st, [c_void_p, P(c_size), c_size]),
        "tl_session_set_loop": (st, [c_void_p, P(SessionStep), c_size]),
        "tl_session_learn": (st, [c_void_p, c_bool]),
        "tl_session_next_step": (st, [c_void_p, P(SessionStep)]),
        "tl_session_group": (st, [c_void_p, c_char_p, P(c_size), c_size, P(SessionStep)]),
        "tl_session_group_name": (c_char_p, [c_void_p, c_size]),
        "tl_session_evict": (st, [c_void_p, c_char_p, c_u64, P(c_u64)]),
        "tl_session_mark_dirty": (st, [c_void_p, c_size]),
        "tl_session_refresh": (st, [c_void_p, c_size]),
        "tl_session_stats_get": (st, [c_void_p, P(SessionStats), c_size]),
        "tl_session_events_copy": (c_size, [c_void_p, c_u64, P(SessionEvent), c_size, c_size,
                                            P(SessionLog), c_size]),
        "tl_session_events_clear": (st, [c_void_p]),
        "tl_session_check": (st, [c_void_p]),
        "tl_spill_options_init": (None, [P(SpillOptions)]),
        "tl_spill_create": (st, [c_u64, P(SpillOptions), P(c_void_p)]),
        "tl_spill_write": (st, [c_void_p, c_u64, c_void_p, c_u64]),
        "tl_spill_map": (st, [c_void_p, P(c_void_p)]),
        "tl_spill_size": (c_u64, [c_void_p]),
        "tl_spill_fd": (c_int, [c_void_p]),
        "tl_spill_destroy": (None, [c_void_p]),
    }
    missing = []
    for name, (res, args) in sigs.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            missing.append(name)
            continue
        fn.restype = res
        fn.argtypes = args
    return missing


lib = _load()
MISSING = _declare(lib)


def optional(name, restype, argtypes):
    """A function the library may lack (newer than it): declared, or None when not exported."""
    fn = getattr(lib, name, None)
    if fn is not None:
        fn.restype, fn.argtypes = restype, argtypes
    return fn
