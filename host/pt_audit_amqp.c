#include "pt_audit_amqp.h"
#include "pt_amqp.h"

#include <semaphore.h>
#include <stdio.h>
#include <string.h>

static struct {
    pt_amqp_out_t *oc;
    char exchange[256], routing_key[256]; /* copied: a reload frees the config */
    sem_t room;
    int ready;
} pt__s;

static void pt__confirmed(pt_amqp_job_t *job)
{
    pt_metrics_inc(
        &pt_metrics_audit[job->failed ? PT_METRICS_AUDIT_FAILED : PT_METRICS_AUDIT_WRITTEN], 1);
    pt_amqp_job_free(job);
    sem_post(&pt__s.room);
}

static int pt__send(void *ud, const char *line, size_t len)
{
    (void)ud;
    if (!pt_amqp_available(pt__s.oc)) return -1;
    pt_amqp_job_t *job = pt_amqp_job_new();
    if (!job) return -1;
    job->exchange = pt_amqp_job_bytes(job, pt__s.exchange, strlen(pt__s.exchange));
    job->routing_key = pt_amqp_job_bytes(job, pt__s.routing_key, strlen(pt__s.routing_key));
    job->body = pt_amqp_job_bytes(job, line, len);
    if (!job->exchange.bytes || (len && !job->body.bytes)) {
        pt_amqp_job_free(job);
        return -1;
    }
    job->props._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    job->props.content_type = amqp_cstring_bytes("application/json");
    job->props.delivery_mode = 2;
    job->done = pt__confirmed;
    sem_wait(&pt__s.room); /* the writer thread waits, never a worker */
    pt_amqp_submit(pt__s.oc, job);
    return 1; /* counted when the broker confirms */
}

int pt_audit_amqp_sink(const pt_config_obs_t *o, pt_audit_sink_fn *fn, void **ud, char *err,
                       size_t errlen)
{
    *fn = NULL;
    *ud = NULL;
    if (!o->audit_amqp_outgoing || !o->n_audit_channels) return 0;
    if (!(pt__s.oc = pt_amqp_find(o->audit_amqp_outgoing))) {
        snprintf(err, errlen, "audit.amqp.outgoing: no outgoing.amqp connection is called '%s'",
                 o->audit_amqp_outgoing);
        return -1;
    }
    snprintf(pt__s.exchange, sizeof pt__s.exchange, "%s", o->audit_amqp_exchange);
    snprintf(pt__s.routing_key, sizeof pt__s.routing_key, "%s", o->audit_amqp_routing_key);
    if (!pt__s.ready && sem_init(&pt__s.room, 0, PT_AUDIT_AMQP_INFLIGHT) != 0) {
        snprintf(err, errlen, "cannot make the audit sink's semaphore");
        return -1;
    }
    pt__s.ready = 1;
    *fn = pt__send;
    return 0;
}
