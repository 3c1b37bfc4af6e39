/*
 * cmd_devices.c — `tierload devices [--sim SPEC] [--ggml[=DIR]] [--rpc LIST]
 * [--json] [--verbose]`: one line per registered device with its total and free memory
 * and capabilities, or {"devices":[{name,kind,total,free,host_pointer,async}]}
 * (ggml devices add "host_mappable"; RPC servers' devices their network link).
 */
#include "cli/cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int devices_help(void) {
    printf("usage: tierload devices [--sim SPEC] [--ggml[=DIR]] [--rpc LIST] [--json] [--verbose]\n\n"
           "List devices (cpu, cuda*, simulated GPUs, ggml devices) with total and free "
           "memory.\n\n"
           "  --sim SPEC   add simulated GPUs, e.g. 'gpu0=8G,gpu1=4G:bw=16G:lat=10us'\n"
           "               (names are used as given; bw in bytes/s, lat in s/ms/us/ns)\n"
           "  --ggml[=DIR] also list ggml's backend devices (ggml:CPU, ggml:CUDA0, ...),\n"
           "               loading ggml's libraries from DIR, else $TIERLOAD_GGML_DIR,\n"
           "               else the source build made by `make ggml`, else the loader's\n"
           "               path; fails (status 5) saying why when absent\n"
           "  --rpc LIST   also the devices of ggml RPC servers: 'HOST:PORT[@BW][,...]'\n"
           "               (ggml-rpc-server), named rpcS:D; a server that is not there or\n"
           "               does not answer fails (status 9) naming it; each link is\n"
           "               measured when added (round trip, 4 MiB each way) unless @BW\n"
           "               gives its bandwidth (bytes/s as 1.25G, or bits/s as 10gbit)\n"
           "  --json       "
           "{\"devices\":[{\"name\",\"kind\",\"total\",\"free\",\"host_pointer\",\"async\"}]}\n"
           "               (ggml devices add \"host_mappable\": mapped weights usable in place;\n"
           "               RPC servers' devices \"link\":{\"bandwidth\",\"latency\",\"measured\"})\n"
           "  --verbose    also say on stderr why there is no CUDA device\n");
    return 0;
}

static cJSON *json_u64(uint64_t v) {
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)v);
    return cJSON_CreateRaw(b);
}

int cmd_devices(int argc, char **argv) {
    bool json = false, verbose = false, ggml = false;
    const char *ggml_dir = NULL, *rpc = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *spec = NULL;
        int r;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return devices_help();
        if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--verbose") || !strcmp(a, "-v")) {
            verbose = true;
        } else if (!strcmp(a, "--ggml") || !strncmp(a, "--ggml=", 7)) {
            ggml = true;
            ggml_dir = a[6] == '=' ? a + 7 : NULL;
        } else if ((r = cli_opt(argc, argv, &i, "devices", "--rpc", &rpc)) != 0) {
            if (r < 0) return 2;
        } else if ((r = cli_opt(argc, argv, &i, "devices", "--sim", &spec)) != 0) {
            if (r < 0) return 2;
            tl_status s = tl_device_sim_add(spec);
            if (s != TL_OK) return cli_fail(s);
        } else {
            return cli_usage("devices", "unknown option '%s'", a);
        }
    }

    if (verbose) {
        const char *why = tl_device_cuda_reason();
        if (why && *why) fprintf(stderr, "tierload: %s\n", cli_safe(why));
    }
    if (ggml || rpc) {
        tl_status s = tl_device_ggml_discover(ggml_dir, NULL);
        if (s != TL_OK) return cli_fail(s);
    }
    if (rpc) {
        tl_status s = tl_device_ggml_rpc_add(rpc, NULL);
        if (s != TL_OK) return cli_fail(s);
    }

    tl_device *devs[256];
    size_t n = tl_device_list(devs, 256);
    if (n > 256) n = 256;
    tl_device_info *infos = calloc(n ? n : 1, sizeof *infos);
    if (!infos) {
        tl_device_list_release(devs, n);
        fprintf(stderr, "tierload: out of memory\n");
        return cli_exit_code(TL_ERR_NOMEM);
    }
    for (size_t i = 0; i < n; i++) {
        tl_status s = tl_device_describe(devs[i], &infos[i], sizeof infos[i]);
        if (s != TL_OK) {
            tl_device_list_release(devs, n);
            free(infos);
            return cli_fail(s);
        }
    }
    /* capabilities only ggml devices have, while the references are held */
    bool *mappable = calloc(n ? n : 1, sizeof *mappable);
    for (size_t i = 0; mappable && i < n; i++)
        mappable[i] = infos[i].kind == TL_DEVICE_GGML && tl_device_ggml_host_mappable(devs[i]);
    /* the network link of RPC servers' devices: bandwidth, latency (bw < 0: none) */
    double *link = calloc(n ? 3 * n : 1, sizeof *link);
    for (size_t i = 0; link && i < n; i++) {
        bool measured = false;
        link[3 * i] = -1;
        if (infos[i].kind == TL_DEVICE_GGML &&
            tl_device_link(devs[i], &link[3 * i], &link[3 * i + 1], &measured) == TL_OK)
            link[3 * i + 2] = measured;
        else
            link[3 * i] = -1;
    }
    tl_device_list_release(devs, n);

    if (json) {
        cJSON *root = cJSON_CreateObject();
        cJSON *arr = cJSON_AddArrayToObject(root, "devices");
        for (size_t i = 0; i < n; i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", infos[i].name);
            cJSON_AddStringToObject(o, "kind", tl_device_kind_name(infos[i].kind));
            cJSON_AddItemToObject(o, "total", json_u64(infos[i].total));
            cJSON_AddItemToObject(o, "free", json_u64(infos[i].free));
            cJSON_AddBoolToObject(o, "host_pointer", infos[i].host_pointer);
            cJSON_AddBoolToObject(o, "async", infos[i].async);
            if (infos[i].kind == TL_DEVICE_GGML)
                cJSON_AddBoolToObject(o, "host_mappable", mappable && mappable[i]);
            if (link && link[3 * i] >= 0) {
                cJSON *l = cJSON_AddObjectToObject(o, "link");
                cJSON_AddNumberToObject(l, "bandwidth", link[3 * i]);
                cJSON_AddNumberToObject(l, "latency", link[3 * i + 1]);
                cJSON_AddBoolToObject(l, "measured", link[3 * i + 2] != 0);
            }
            cJSON_AddItemToArray(arr, o);
        }
        char *txt = cJSON_PrintUnformatted(root);
        if (txt) {
            cli_json_write(txt, stdout);
            putchar('\n');
        }
        cJSON_free(txt);
        cJSON_Delete(root);
    } else {
        printf("%-12s %-6s %12s %12s  %-20s %s\n", "NAME", "KIND", "TOTAL", "FREE", "CAPABILITIES",
               "DESCRIPTION");
        for (size_t i = 0; i < n; i++) {
            char t[32], f[32], caps[64];
            bool map = mappable && mappable[i];
            snprintf(caps, sizeof caps, "%s%s%salign=%u", infos[i].host_pointer ? "host-ptr," : "",
                     map ? "host-map," : "", infos[i].async ? "async," : "", infos[i].alignment);
            char ln[96] = "";
            if (link && link[3 * i] >= 0) {
                char b[32];
                snprintf(ln, sizeof ln, "; link %s/s %s, round trip %.0f us",
                         cli_fmt_size((uint64_t)link[3 * i], b, sizeof b),
                         link[3 * i + 2] != 0 ? "measured" : "given", link[3 * i + 1] * 1e6);
            }
            printf("%-12s %-6s %12s %12s  %-20s %s%s\n", cli_safe(infos[i].name),
                   tl_device_kind_name(infos[i].kind), cli_fmt_size(infos[i].total, t, sizeof t),
                   cli_fmt_size(infos[i].free, f, sizeof f), caps, cli_safe(infos[i].desc), ln);
        }
    }
    free(infos);
    free(mappable);
    free(link);
    return 0;
}
