/*
 * library.h — the process-wide settings a host program gives with tl_init.
 */
#ifndef TL_CORE_LIBRARY_H
#define TL_CORE_LIBRARY_H

#include "tierload.h"

/*
 * The settings tl_init took (the defaults when it was never called). The
 * first call fixes them: tl_init fails from then on, since what the settings
 * govern (device discovery, the SIGBUS guard) may already have happened.
 */
const tl_library_options *tl__lib_options(void);

#endif
