# api_renames.sed — renames that bring the public API under one naming rule
# (see the conventions atop include/tierload.h). One word-bounded rename a line;
# applied to the whole tree by tools/apply_renames.sh.
#
# objects the library makes: tl_<noun>_create / tl_<noun>_destroy
s/\btl_device_new\b/tl_device_create/g
s/\btl_device_sim_new\b/tl_device_sim_create/g
s/\btl_device_cpu_new\b/tl_device_cpu_create/g
s/\btl_plan_free\b/tl_plan_destroy/g
s/\btl_load_result_free\b/tl_load_result_destroy/g
s/\btl_memwatch_start\b/tl_memwatch_create/g
s/\btl_memwatch_stop\b/tl_memwatch_destroy/g
# a caller-owned struct: tl_<noun>_init / tl_<noun>_clear
s/\btl_plan_summary_free\b/tl_plan_summary_clear/g
# getters: tl_<noun>_<field>, or tl_<noun>_<field>_of where a type has that name
s/\btl_plan_device_at\b/tl_plan_device_of/g
s/\btl_model_meta_array_get\b/tl_model_meta_element/g
# parsers of what people type: tl_parse_<what> (the planner's: tl_plan_parse_<what>)
s/\btl_plan_parse_bytes\b/tl_parse_bytes/g
s/\btl_map_flags_parse\b/tl_parse_map_flags/g
s/\btl_device_sim_spec_parse\b/tl_parse_sim_spec/g
