/*
 * registry.c — the device registry: the library's only global mutable state.
 * One mutex guards it; the built-in devices (cpu, then cuda*) are discovered
 * once, on the first call. Lookup is case-insensitive by exact name or unique
 * prefix, and hands out references taken under the lock, so a device found
 * here stays alive however other threads unregister it. The built-in cpu
 * device cannot be unregistered.
 */
#include "core/error.h"
#include "devices/devices.h"
#include "os/os.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static tl_device **reg_devs;
static size_t reg_n, reg_cap;
static bool reg_discovered;
static tl_device *reg_cpu; /* the built-in host device (never unregistered) */

/* Append (lock held); takes a reference. */
static tl_status reg_add_locked(tl_device *d) {
    for (size_t i = 0; i < reg_n; i++) {
        if (reg_devs[i] == d)
            return tl__err(TL_ERR_INVALID_ARG, "device '%s' is already registered", d->name);
        if (strcasecmp(reg_devs[i]->name, d->name) == 0)
            return tl__err(TL_ERR_INVALID_ARG, "a device named '%s' is already registered",
                          reg_devs[i]->name);
    }
    if (reg_n == reg_cap) {
        size_t cap = reg_cap ? reg_cap * 2 : 8;
        tl_device **nd = tl__os_realloc(reg_devs, cap * sizeof *nd);
        if (!nd) return tl__err(TL_ERR_NOMEM, "device registry: out of memory");
        reg_devs = nd;
        reg_cap = cap;
    }
    tl_device_retain(d);
    reg_devs[reg_n++] = d;
    return TL_OK;
}

/* Discovery callback: register and drop the discoverer's reference. */
static void discovered_add(tl_device *d) {
    reg_add_locked(d);
    tl_device_release(d);
}

static void discover_locked(void) {
    if (reg_discovered) return;
    reg_discovered = true;
    tl_device *cpu = NULL;
    if (tl__device_cpu_create(&cpu) == TL_OK) {
        reg_cpu = cpu;
        discovered_add(cpu);
    }
    tl__cuda_discover(discovered_add);
    tl__err_clear();
}

tl_status tl_device_register(tl_device *d) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_register: NULL device");
    pthread_mutex_lock(&reg_lock);
    discover_locked();
    tl_status s = reg_add_locked(d);
    pthread_mutex_unlock(&reg_lock);
    return s;
}

tl_status tl_device_unregister(tl_device *d) {
    if (!d) return tl__err(TL_ERR_INVALID_ARG, "tl_device_unregister: NULL device");
    pthread_mutex_lock(&reg_lock);
    if (d == reg_cpu) {
        pthread_mutex_unlock(&reg_lock);
        return tl__err(TL_ERR_INVALID_ARG, "the built-in device '%s' cannot be unregistered",
                      d->name);
    }
    size_t i = 0;
    while (i < reg_n && reg_devs[i] != d)
        i++;
    if (i == reg_n) {
        pthread_mutex_unlock(&reg_lock);
        return tl__err(TL_ERR_NOT_FOUND, "device '%s' is not registered", d->name);
    }
    memmove(reg_devs + i, reg_devs + i + 1, (reg_n - i - 1) * sizeof *reg_devs);
    reg_n--;
    pthread_mutex_unlock(&reg_lock);
    tl_device_release(d);
    return TL_OK;
}

tl_status tl_device_find(const char *name, tl_device **out) {
    if (!out) return tl__err(TL_ERR_INVALID_ARG, "tl_device_find: out is NULL");
    *out = NULL;
    if (!name || !*name) return tl__err(TL_ERR_INVALID_ARG, "empty device name");
    pthread_mutex_lock(&reg_lock);
    discover_locked();
    size_t len = strlen(name), hits = 0;
    tl_device *hit = NULL;
    for (size_t i = 0; i < reg_n; i++) {
        if (strcasecmp(reg_devs[i]->name, name) == 0) {
            *out = reg_devs[i];
            tl_device_retain(*out);
            pthread_mutex_unlock(&reg_lock);
            return TL_OK;
        }
        if (strncasecmp(reg_devs[i]->name, name, len) == 0) {
            hits++;
            hit = reg_devs[i];
        }
    }
    tl_status s = TL_OK;
    if (hits == 1) {
        *out = hit;
        tl_device_retain(hit);
    } else if (hits == 0) {
        char list[512];
        size_t o = 0;
        list[0] = 0;
        for (size_t i = 0; i < reg_n && o < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", i ? ", " : "",
                                  reg_devs[i]->name);
        s = tl__err(TL_ERR_NOT_FOUND, "no device '%s' (devices: %s)", name, list);
    } else {
        char list[512];
        size_t o = 0;
        list[0] = 0;
        for (size_t i = 0; i < reg_n && o < sizeof list; i++)
            if (strncasecmp(reg_devs[i]->name, name, len) == 0)
                o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "",
                                      reg_devs[i]->name);
        s = tl__err(TL_ERR_INVALID_ARG, "device name '%s' is ambiguous: %s", name, list);
    }
    pthread_mutex_unlock(&reg_lock);
    return s;
}

size_t tl_device_list(tl_device **out, size_t cap) {
    pthread_mutex_lock(&reg_lock);
    discover_locked();
    size_t n = reg_n;
    for (size_t i = 0; out && i < n && i < cap; i++) {
        out[i] = reg_devs[i];
        tl_device_retain(out[i]);
    }
    pthread_mutex_unlock(&reg_lock);
    return n;
}

void tl_device_list_release(tl_device **devs, size_t n) {
    for (size_t i = 0; devs && i < n; i++) {
        tl_device_release(devs[i]);
        devs[i] = NULL;
    }
}
