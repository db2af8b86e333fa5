/* pt_primitives: the one list of the C primitives a gateway VM's portico.host
 * gets (outgoing HTTP, AMQP publish, WebSocket push, sleep and spawn). A new primitive is one
 * more register function here; pt_lua knows none of them. */
#ifndef PT_PRIMITIVES_H
#define PT_PRIMITIVES_H

#include "pt_lua.h"

/* NULL-terminated, for pt_lua_new. */
extern const pt_lua_register_fn pt_primitives[];

#endif
