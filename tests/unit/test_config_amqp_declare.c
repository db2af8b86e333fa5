/* declare: on outgoing.amqp, channels.amqp and channels.amqp_bus
 * (pt_config_amqp_declare.c): what it parses to, copies that follow a
 * connection, and each mistake refused with its line. */
#include "pt_test_config.h"

#include <string.h>

#define OUT "outgoing:\n  amqp:\n    - name: b\n      declare:\n"

PT_CASE(parsed)
{
    pt_config_t *cfg;
    char err[512] = "";
    int rc = pt_test_load(OUT "        exchanges:\n"
                              "          - {name: /incoming, type: topic}\n"
                              "          - {name: fan, type: fanout, durable: false, auto_delete: true}\n"
                              "        queues:\n"
                              "          - {name: api.incoming}\n"
                              "          - {name: tmp, durable: no, exclusive: yes, auto_delete: yes}\n"
                              "        bindings:\n"
                              "          - {exchange: /incoming, queue: api.incoming, routing_key: api}\n"
                              "          - {exchange: fan, queue: tmp}\n"
                              "channels:\n  amqp:\n"
                              "    - {name: in, connection: b, queue: api.incoming, service: s}\n"
                              "    - name: own\n      connection: b\n      queue: q\n      service: s\n"
                              "      declare: {queues: [{name: q}]}\n",
                          &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc != 0) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    const pt_amqp_declare_t *d = &cfg->amqp_out[0].ep.declare;
    PT_CHECK_INT(d->n_exchanges, 2);
    PT_CHECK_INT(d->n_queues, 2);
    PT_CHECK_INT(d->n_bindings, 2);
    if (d->n_exchanges == 2 && d->n_queues == 2 && d->n_bindings == 2) {
        PT_CHECK_STR(d->exchanges[0].name, "/incoming");
        PT_CHECK_STR(d->exchanges[0].type, "topic");
        PT_CHECK_INT(d->exchanges[0].durable, 1); /* the default */
        PT_CHECK_INT(d->exchanges[0].auto_delete, 0);
        PT_CHECK_STR(d->exchanges[1].type, "fanout");
        PT_CHECK_INT(d->exchanges[1].durable, 0);
        PT_CHECK_INT(d->exchanges[1].auto_delete, 1);
        PT_CHECK_INT(d->queues[0].durable, 1);
        PT_CHECK_INT(d->queues[0].exclusive, 0);
        PT_CHECK_INT(d->queues[1].exclusive, 1);
        PT_CHECK_STR(d->bindings[0].routing_key, "api");
        PT_CHECK_STR(d->bindings[1].routing_key, ""); /* the default */
        PT_CHECK_STR(d->bindings[1].queue, "tmp");
    }
    /* a channel on the connection declares what the connection does, unless it has its own */
    PT_CHECK_INT(cfg->n_amqp_channels, 2);
    if (cfg->n_amqp_channels == 2) {
        PT_CHECK(pt_amqp_declare_same(&cfg->amqp_channels[0].ep.declare, d));
        PT_CHECK_INT(cfg->amqp_channels[1].ep.declare.n_queues, 1);
        PT_CHECK_INT(cfg->amqp_channels[1].ep.declare.n_exchanges, 0);
        PT_CHECK(!pt_amqp_declare_same(&cfg->amqp_channels[1].ep.declare, d));
    }
    pt_config_free(cfg);
    /* no declare: nothing */
    rc = pt_test_load("outgoing:\n  amqp:\n    - name: b\n", &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        PT_CHECK_INT(cfg->amqp_out[0].ep.declare.n_exchanges, 0);
        pt_config_free(cfg);
    }
    /* the bus takes one too */
    rc = pt_test_load("channels:\n  amqp_bus:\n    - name: bus\n      url_prefix: /bus\n"
                      "      declare: {exchanges: [{name: foo}]}\n",
                      &cfg, err, sizeof err);
    PT_CHECK_INT(rc, 0);
    if (rc == 0) {
        const pt_channel_t *bus = NULL;
        for (size_t i = 0; i < cfg->n_channels; i++)
            if (cfg->channels[i].type == PT_CHANNEL_AMQP_BUS) bus = &cfg->channels[i];
        PT_CHECK(bus && bus->bus_ep.declare.n_exchanges == 1);
        if (bus && bus->bus_ep.declare.n_exchanges == 1)
            PT_CHECK_STR(bus->bus_ep.declare.exchanges[0].type, "direct");
        pt_config_free(cfg);
    }
}

PT_CASE(mistakes_name_the_line)
{
    PT_CHECK(pt_test_fails_with(OUT "        exchange: []\n",
                                ":5: outgoing.amqp[0].declare: unknown key 'exchange'"));
    PT_CHECK(pt_test_fails_with(OUT "        exchanges: {name: x}\n",
                                ":5: outgoing.amqp[0].declare.exchanges: expected a list"));
    PT_CHECK(pt_test_fails_with(OUT "        exchanges: [x]\n",
                                ":5: outgoing.amqp[0].declare.exchanges[0]: expected a mapping"));
    PT_CHECK(pt_test_fails_with(OUT "        exchanges:\n          - {type: topic}\n",
                                ":6: outgoing.amqp[0].declare.exchanges[0].name: missing"));
    PT_CHECK(pt_test_fails_with(OUT "        exchanges:\n          - {name: x, type: tpoic}\n",
                                ":6: outgoing.amqp[0].declare.exchanges[0].type: expected direct, "
                                "fanout, topic, headers or x-<plugin>"));
    PT_CHECK(pt_test_fails_with(OUT "        exchanges:\n          - {name: x, durable: maybe}\n",
                                ":6: outgoing.amqp[0].declare.exchanges[0].durable"));
    PT_CHECK(pt_test_fails_with(OUT "        exchanges:\n          - {name: x, exclusive: true}\n",
                                ":6: outgoing.amqp[0].declare.exchanges[0]: unknown key 'exclusive'"));
    PT_CHECK(pt_test_fails_with(OUT "        exchanges:\n          - {name: amq.topic}\n",
                                ":6: outgoing.amqp[0].declare.exchanges[0].name: 'amq.topic': names "
                                "starting with amq. are the broker's own"));
    PT_CHECK(pt_test_fails_with(OUT "        exchanges:\n          - {name: \"\"}\n",
                                ":6: outgoing.amqp[0].declare.exchanges[0].name: expected a name of "
                                "1 to 255 bytes"));
    PT_CHECK(pt_test_fails_with(OUT "        queues:\n          - {name: q}\n          - {name: q}\n",
                                ":7: outgoing.amqp[0].declare.queues: 'q' is declared twice"));
    PT_CHECK(pt_test_fails_with(OUT "        queues:\n          - {name: q, type: topic}\n",
                                ":6: outgoing.amqp[0].declare.queues[0]: unknown key 'type'"));
    PT_CHECK(pt_test_fails_with(OUT "        bindings:\n          - {exchange: x}\n",
                                ":6: outgoing.amqp[0].declare.bindings[0].queue: missing"));
    PT_CHECK(pt_test_fails_with(OUT "        bindings:\n          - {exchange: x, queue: q, "
                                    "routing_key: [a]}\n",
                                ":6: outgoing.amqp[0].declare.bindings[0].routing_key: expected a "
                                "string"));
    PT_CHECK(pt_test_fails_with("channels:\n  amqp:\n    - name: in\n      queue: q\n"
                                "      service: s\n      declare: {queues: [{name: q, x: 1}]}\n",
                                ":6: channels.amqp[0].declare.queues[0]: unknown key 'x'"));
    PT_CHECK(pt_test_fails_with("channels:\n  amqp_bus:\n    - name: bus\n      url_prefix: /bus\n"
                                "      declare: {exchanges: [{name: foo, type: 7}]}\n",
                                ":5: channels.amqp_bus[0].declare.exchanges[0].type"));
}

int main(void)
{
    PT_RUN(parsed);
    PT_RUN(mistakes_name_the_line);
    return PT_TEST_DONE();
}
