/*
 * registry.c — plan devices from the registered devices: the one planner
 * file that looks outside its inputs, and only through the public device
 * API (list, describe). The host (cpu kind) is always kept; GPUs beyond what
 * a plan or the caller's array holds are never dropped silently.
 */
#include "plan/plan.h"

#include "core/error.h"
#include "os/os.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tl_status tl_plan_devices_from_registry(tl_plan_device *out, size_t cap, size_t *n,
                                        size_t *dropped) {
    if (!out || !n) return tl__err(TL_ERR_INVALID_ARG, "plan devices: NULL argument");
    *n = 0;
    if (dropped) *dropped = 0;
    size_t count = tl_device_list(NULL, 0);
    tl_device **list = tl__os_calloc(count ? count : 1, sizeof *list);
    size_t listed = 0; /* references held in list */
    tl_plan_device *all = tl__os_calloc(count ? count : 1, sizeof *all);
    tl_status st = TL_OK;
    if (!list || !all) {
        st = tl__err(TL_ERR_NOMEM, "plan devices: out of memory for %zu devices", count);
        goto out;
    }
    size_t got = tl_device_list(list, count);
    if (got < count) count = got; /* unregistered meanwhile */
    listed = count;
    size_t hosts = 0;
    for (size_t i = 0; i < count; i++) {
        tl_device_info info;
        if ((st = tl_device_describe(list[i], &info, sizeof info))) goto out;
        tl_plan_device *d = &all[i];
        snprintf(d->name, sizeof d->name, "%s", info.name);
        d->is_gpu = info.kind != TL_DEVICE_CPU;
        d->total = info.total;
        d->free = info.free;
        hosts += !d->is_gpu;
    }
    if (hosts > cap) {
        st = tl__err(TL_ERR_INVALID_ARG, "plan devices: room for %zu devices, %zu hosts registered",
                    cap, hosts);
        goto out;
    }
    size_t room = cap - hosts < TL_PLAN_MAX_GPUS ? cap - hosts : TL_PLAN_MAX_GPUS;
    size_t gpus = 0, left_out = 0;
    char names[256] = "";
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        if (all[i].is_gpu && gpus == room) {
            left_out++;
            if (at < sizeof names) {
                int k =
                    snprintf(names + at, sizeof names - at, "%s%s", at ? ", " : "", all[i].name);
                at = k < 0 ? sizeof names : at + (size_t)k;
            }
            continue;
        }
        gpus += all[i].is_gpu;
        out[(*n)++] = all[i];
    }
    if (left_out && !dropped) {
        *n = 0;
        st = tl__err(TL_ERR_INVALID_ARG,
                    "plan devices: %zu GPUs registered but room for %zu (a plan uses at most %d): "
                    "%s%s would be left out",
                    gpus + left_out, room, TL_PLAN_MAX_GPUS, names,
                    at >= sizeof names ? ", ..." : "");
        goto out;
    }
    if (dropped) *dropped = left_out;
out:
    if (list) tl_device_list_release(list, listed);
    free(list);
    free(all);
    return st;
}
