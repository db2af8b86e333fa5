/* pt_trace_queue: what pt_trace (spans) and pt_trace_export (the exporter
 * thread) share: the bounded queue between them (the span record is in
 * pt_trace.h, for its inline attribute functions). The
 * queue is a ring of span pointers under one mutex; a push never waits
 * for the exporter (a full ring drops the span and counts it).
 *
 * Records are recycled, not freed: the exporter puts the records of a
 * batch it posted on a list of spares, and a thread that pushes a span
 * with no spare record of its own left takes that whole list with it under
 * the same lock. So a span costs no malloc and no free (a free on the
 * exporter of memory the worker's malloc cache gave is the dear kind). */
#ifndef PT_TRACE_QUEUE_H
#define PT_TRACE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

/* Takes s (recycled by the exporter, or now when the queue is full or
 * off). When want, returns the exporter's spare records (a list through
 * next, now the caller's), or NULL when there are none. */
struct pt_span_s *pt_trace_queue_push(struct pt_span_s *s, int want);

/* Gives a list of records (through next) back: freed. */
void pt_trace_queue_free(struct pt_span_s *list);

/* The ratio of new traces sampled (pt_trace_start sets it). */
void pt_trace_set_ratio(double r);

#endif
