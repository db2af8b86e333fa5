/* pt_notify: tells the service manager (systemd, Type=notify) what the process
 * is doing, through sd_notify(3) of libsystemd. Without $NOTIFY_SOCKET (not
 * started by systemd) every call does nothing. Layer 1 (base). */
#ifndef PT_NOTIFY_H
#define PT_NOTIFY_H

/* READY=1 with a STATUS line: the listeners serve (also after a reload). */
void pt_notify_ready(const char *status);
/* RELOADING=1 with MONOTONIC_USEC (systemd >= 253 wants it): a config
 * reload starts; pt_notify_ready ends it, accepted or refused. */
void pt_notify_reloading(void);
/* STOPPING=1: draining before the exit. */
void pt_notify_stopping(void);

#endif
