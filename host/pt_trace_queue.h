/* pt_trace_queue: what pt_trace (spans) and pt_trace_export (the exporter
 * thread) share: the span record and the bounded queue between them. The
 * queue is a ring of span pointers under one mutex; a push never waits
 * for the exporter (a full ring drops the span and counts it). */
#ifndef PT_TRACE_QUEUE_H
#define PT_TRACE_QUEUE_H

#include <stddef.h>
#include <stdint.h>

struct pt_span_s {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t parent_id[8];
    int kind;
    int error;
    uint64_t start_ns, end_ns;
    char name[64];
    char msg[64]; /* the status message of an error */
    size_t attrs_len;
    /* attributes as records: type ('s', 'i' int64, 'd' double), key length
     * (1 byte), value length (2 bytes, big-endian), key, value */
    char attrs[800]; /* the span stays under glibc's per-thread cache limit (1 KB) */
};

/* Takes s (freed by the exporter, or now when the queue is full or off). */
void pt_trace_queue_push(struct pt_span_s *s);

/* An attribute did not fit in its span. */
void pt_trace_queue_count_attr_drop(void);

/* The ratio of new traces sampled (pt_trace_start sets it). */
void pt_trace_set_ratio(double r);

#endif
