/*
 * cli.h — what the tierload subcommands share: the exit-code convention,
 * error printing, size parsing ("8G", "512M", "-2G") and JSON output. The CLI
 * is thin: everything it does is a public API call from tierload.h.
 */
#ifndef TL_CLI_CLI_H
#define TL_CLI_CLI_H

#include "tierload.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit status for a failed status: 1..125, one per kind of failure. */
int cli_exit_code(tl_status s);
/* Print "tierload: <msg>" (from tl_last_error) on stderr and return the exit code. */
int cli_fail(tl_status s);
/* Print a usage error on stderr and return 2. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Strings from files and users in output (text.c): cli_safe escapes control
 * characters, C1/bidi controls and invalid UTF-8 for a terminal (the result
 * lives until 8 more calls); cli_escape returns a heap copy
 * (keep_newlines for multi-line text); cli_fputs_safe prints one;
 * cli_json_write prints JSON text with invalid UTF-8 bytes as \ufffd.
 */
const char *cli_safe(const char *s);
char *cli_escape(const char *s, bool keep_newlines);
void cli_fputs_safe(const char *s, FILE *f);
void cli_json_write(const char *text, FILE *f);
/* Length of the valid UTF-8 sequence at s (of n bytes) and its code point; 0 if invalid. */
size_t cli_utf8_seq(const unsigned char *s, size_t n, uint32_t *cp);

/*
 * Options with a value: is argv[*i] `opt`, as "--opt VALUE" or "--opt=VALUE"?
 * 1: *val set (*i advanced past a separate value); 0: another argument;
 * -1: the value is missing ("option --opt needs a value" printed as a usage
 * error of cmd).
 */
int cli_opt(int argc, char **argv, int *i, const char *cmd, const char *opt, const char **val);
/* A count: decimal digits only (no sign, no suffix), at most max. */
bool cli_parse_count(const char *s, uint64_t max, uint64_t *out);

/* Parse a size ("8G", "9.5GiB", "-2G" when negative is not NULL): tl_parse_bytes. */
bool cli_parse_size(const char *s, uint64_t *bytes, bool *negative);
/* Human size "1.50 GiB" into buf. */
const char *cli_fmt_size(uint64_t bytes, char *buf, size_t n);

/*
 * Model files named on a command line: bare paths and sd.cpp-style component
 * flags (--vae F, --clip_l F, ...), with the prefix each file's tensors get.
 */
typedef struct cli_models {
    const char **paths;
    const char **prefixes; /* NULL entries for bare paths */
    size_t n, cap;
    bool writable; /* open copy-on-write writable (LoRA merges) */
    const char **rules; /* --component values, as given */
    size_t n_rules, cap_rules;
} cli_models;
/*
 * Take argv[*i] if it names a model: a component flag and its file ("--vae F"
 * advancing *i, or "--vae=F"), a bare path, or "--" (the end of options: every
 * later argument is a path; *i ends at the last). 1 = taken, 0 = not a model
 * argument (another option), -1 = a usage error (printed) or out of memory.
 */
int cli_models_arg(cli_models *m, int argc, char **argv, int *i, const char *cmd);
/* Help lines for the component flags. */
const char *cli_models_help(void);
tl_status cli_models_open(const cli_models *m, tl_model **out);
void cli_models_free(cli_models *m);


#define CLI_SD_VALUE_MAX 64 /* a value of a stable-diffusion.cpp module assignment */

/* The planning flags `plan` and `run` share. */
typedef struct cli_planargs {
    const char *devices, *sim, *rpc, *type, *steps, *steps2, *headroom;
    const char *svg; /* --svg FILE: the plan as a picture */
    const char *offload, *phase_resident, *split; /* per-component constraints */
    /* stable-diffusion.cpp's flags, aliases of the ones above */
    const char *main_dev, *comp_dev[TL_COMP_COUNT], *params_backend, *fit_target;
    const char *fit_reserve[TL_COMP_COUNT];
    const char *split_mode;
    const char *width, *height, *frames; /* -W, -H, --video-frames: --size */
    bool auto_fit, no_auto_fit, no_multi_gpu, fit_dry_run, list_devices, stream_layers;
    char params_dev[TL_COMP_COUNT + 1][CLI_SD_VALUE_MAX]; /* --params-backend devices */
    char joined[5][1024]; /* --backend, --params-backend, --split, --split-mode,
                             --override-tensor given twice */
    const char *ignored[32]; /* its flags that tierload accepts and ignores (sdcpp.c) */
    size_t n_ignored;
    char backend_own[1024], backend_buf[1024], reserve_buf[512], size_buf[64];
    tl_plan_options o;
    tl_dtype convert; /* from --type (TL_DTYPE_INVALID: none), set by cli_planargs_check */
    bool sim_added;
} cli_planargs;
/* 1 = argv[*i] was a planning flag (taken), 0 = not one, -1 = a usage error (printed). */
int cli_planargs_arg(cli_planargs *a, int argc, char **argv, int *i, const char *cmd);
/*
 * Validate and convert the values (and fold the stable-diffusion.cpp aliases
 * into the canonical options): 0, an exit status (message printed), or -1
 * when the command is done and should exit 0 (--list-devices printed them).
 */
int cli_planargs_check(cli_planargs *a, const char *cmd);
const char *cli_planargs_help(void);
/* cli_fail for planning errors: the library's spec-field words become the CLI's flags. */
int cli_plan_fail(tl_status s);
/*
 * Plan on the flags' devices (--devices, or the registry plus --sim): model m
 * when not NULL (overrides need its names), else the summary sum.
 */
tl_status cli_planargs_plan(cli_planargs *a, const tl_plan_summary *sum, const tl_model *m,
                            tl_plan **out);

/*
 * stable-diffusion.cpp's command line (sdcpp.c). cli_sd_assign parses a
 * module assignment ("te=cpu,diffusion=disk"; "*=", "all=", "default=" or a
 * bare value for every module) whose values are one of values (their index)
 * or, when other is not NULL, anything else (n_values; the text goes to
 * other[c], other[TL_COMP_COUNT] for the default, "" where none): per[c] for
 * each component named (-1: not named), *dflt for the default (-1: none).
 * Modules tierload has no component for are noted on stderr and skipped.
 * 0 or a usage error.
 */
int cli_sd_assign(const char *spec, const char *const *values, int n_values,
                  char (*other)[CLI_SD_VALUE_MAX], int per[TL_COMP_COUNT], int *dflt,
                  const char *flag, const char *cmd);
/* Is [name, name+len) one of its module names tierload has no component for? */
bool cli_sd_unmodelled(const char *name, size_t len);
/* A --backend spec without the items of such modules (each noted); 0 or a usage error. */
int cli_sd_backend_filter(const char *spec, char *out, size_t n, const char *cmd);
/* 1 = argv[*i] is one of its flags tierload ignores (taken, with its value); 0; -1 usage. */
int cli_sd_ignored_arg(cli_planargs *a, int argc, char **argv, int *i, const char *cmd);
/* The one note listing the ignored flags (nothing when none was given). */
void cli_sd_ignored_note(const cli_planargs *a);
/* Is flag one of its flags that takes no value? */
bool cli_sd_boolean(const char *flag);

/* LoRA files named with --lora FILE[:SCALE] (run, merge). */
/*
 * An output file (outfile.c): OUT absent or a regular file, written to a
 * temporary file beside it that is renamed into place by commit and removed
 * by abort, on failure and on SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGXFSZ. open and
 * commit return 0 or an exit status (after printing why).
 */
typedef struct cli_outfile {
    const char *out;
    char *tmp;
    int fd;
    FILE *f;       /* write here */
    bool replaces; /* OUT exists: the commit syncs the bytes before the rename */
} cli_outfile;
int cli_outfile_open(cli_outfile *o, const char *out, const char *cmd);
int cli_outfile_commit(cli_outfile *o, const char *cmd);
void cli_outfile_abort(cli_outfile *o);

typedef struct cli_loras {
    const char **paths; /* FILE part (heap copies) */
    float *scales;
    size_t n;
    bool strict; /* --lora-strict: a key matching no tensor is an error */
    tl_lora **open;
    tl_lora_set *set;
    tl_lora_report *reports; /* per LoRA, filled by cli_loras_apply */
} cli_loras;
/* 1 = argv[*i] was --lora/--lora-strict (taken), 0 = not, -1 = usage error (printed). */
int cli_loras_arg(cli_loras *l, int argc, char **argv, int *i, const char *cmd);
const char *cli_loras_help(void);
/*
 * Open each LoRA and apply it to m (through a tl_lora_set bound to session s,
 * which may be NULL), printing what matched on `out` (NULL: nothing) and
 * warnings about unmatched keys on stderr. Strict: unmatched keys fail.
 * Returns 0 or an exit status (the error printed).
 */
int cli_loras_apply(cli_loras *l, tl_model *m, tl_session *s, FILE *out);
void cli_loras_free(cli_loras *l);

/* Subcommands: argc/argv start at the subcommand's own name. */
int cmd_info(int argc, char **argv);
int cmd_devices(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_run(int argc, char **argv);
/* Parse run's arguments only: 0, or the usage error's exit status (message printed). */
int cmd_run_check_args(int argc, char **argv);
int cmd_merge(int argc, char **argv);

/*
 * `run` over RPC servers, surviving the loss of one (rpc_retry.c): with --rpc the run goes on in
 * a child process; when a server is lost the run starts again without it, re-planned (the
 * placement options dropped) and loaded from the file. Without --rpc: run(argc, argv).
 */
int cli_run_rpc_retry(int argc, char **argv, int (*run)(int argc, char **argv));

#endif
