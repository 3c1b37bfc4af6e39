/*
 * cmd_demo.c — `tierload demo`: the main job on its embedded default.
 *
 * Writes a small SDXL-shaped pipeline (diffusion, text encoders, VAE) into a
 * private temp folder, then runs what a user would: describe it, show the
 * devices (two simulated GPUs beside the host), plan it onto them, and load
 * every tensor into RAM with verification and page-cache eviction, printing
 * each step.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int step(const char *title, int (*cmd)(int, char **), int argc, char **argv) {
    printf("\n$ tierload");
    for (int i = 0; i < argc; i++)
        printf(" %s", argv[i]);
    printf("    # %s\n", title);
    fflush(stdout);
    int rc = cmd(argc, argv);
    fflush(stdout);
    return rc;
}

int cmd_demo(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--help") != 0 && strcmp(argv[1], "-h") != 0)
        return cli_usage("demo", "takes no arguments, got '%s'", argv[1]);
    if (argc > 1) {
        printf("usage: tierload demo\n  writes a synthetic SDXL-shaped model to a temp folder and "
               "runs\n"
               "  info, plan and load on it; removes it afterwards.\n");
        return 0;
    }
    char dir[] = "/tmp/tierload-demo.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("tierload demo: mkdtemp");
        return 4;
    }
    char model[sizeof dir + 32];
    snprintf(model, sizeof model, "%s/sdxl-mini.safetensors", dir);
    char *mk[] = {"mkmodel", model, "--profile", "sdxl", "--size", "96M", "--tensors", "240", NULL};
    char *info[] = {"info", model, "--top", "5", NULL};
    char *devs[] = {"devices", "--sim", "gpu0=64M,gpu1=40M", NULL};
    /* the sim devices stay registered in this process: plan sees them as GPUs */
    char *plan[] = {"plan", model, "--reserve", "diffusion=16M,cond=4M,vae=8M", NULL};
    int rc = step("write a synthetic SDXL-shaped pipeline", cmd_mkmodel, 8, mk);
    if (!rc) rc = step("describe it", cmd_info, 4, info);
    if (!rc) rc = step("two simulated GPUs of 64 and 40 MiB beside the host", cmd_devices, 3, devs);
    if (!rc) rc = step("place it on them", cmd_plan, 4, plan);
    char *load[] = {"load", model, "--verify", "--evict", "--quiet", NULL};
    if (!rc)
        rc = step("load every tensor into RAM, check it against the file, evict the file's pages",
                  cmd_load, 5, load);
    remove(model);
    rmdir(dir);
    return rc;
}
