/*
 * thread.h — starting and joining threads (the worker pools and samplers of
 * io/ and the memory sampler). Mutexes and condition variables are used as
 * plain pthread objects by callers; only thread creation is a system call.
 */
#ifndef TL_OS_THREAD_H
#define TL_OS_THREAD_H

typedef struct tl_os_thread tl_os_thread;

/* Start fn(arg) on a new thread; 0 or an errno. */
int tl_os_thread_start(tl_os_thread **out, void *(*fn)(void *), void *arg);
/* Wait for the thread to end and free it. NULL is fine. */
void tl_os_thread_join(tl_os_thread *t);
/* Sleep for s seconds. */
void tl_os_sleep(double s);

#endif
