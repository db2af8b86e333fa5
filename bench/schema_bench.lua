-- bench/schema_bench.lua: the cost of one portico.schema check, in ns.
--   luajit bench/schema_bench.lua [LUA_DIR]   (default: this tree's lua/)
-- LUA_DIR may hold an older portico/schema.lua to compare (e.g. one taken
-- with `git show REV:lua/portico/schema.lua`); cases it cannot compile are
-- skipped. Best of 5 runs of N checks each; the figures are noisy on a
-- shared machine, compare runs made side by side.
local dir = arg[1] or (debug.getinfo(1, "S").source:match("^@(.*)/bench/") or ".") .. "/lua"
package.path = dir .. "/?.lua;" .. package.path
local schema = require "portico.schema"

local function bench(label, def, value, n, text)
  local ok, c = pcall(schema.compile, def, "input")
  if not ok then
    print(string.format("%-34s (not supported by %s)", label, dir))
    return
  end
  local check = text and schema.check_text or schema.check
  if not check then return end
  assert(check(c, value), label .. ": the value should pass")
  for _ = 1, 1000 do check(c, value) end
  local best = math.huge
  for _ = 1, 5 do
    local t0 = os.clock()
    for _ = 1, n do check(c, value) end
    local dt = os.clock() - t0
    if dt < best then best = dt end
  end
  print(string.format("%-34s %7.0f ns/check", label, best / n * 1e9))
end

bench("flat, 1 field", { customer_id = "integer" }, { customer_id = 123 }, 2e6)
bench("flat, 4 fields", { customer_id = "integer", name = "string", tenant = "string?", active = "boolean" },
  { customer_id = 123, name = "x", active = true }, 2e6)
bench("flat, 4 fields with constraints",
  { customer_id = "integer(1..)", name = "string(1..64)", tenant = "enum(a,b)=a", active = "boolean" },
  { customer_id = 123, name = "x", active = true }, 2e6)
bench("query, 2 fields (text)", { customer_id = "integer", page = "integer(1..)=1" },
  { customer_id = "123", page = "2" }, 2e6, true)
bench("nested order, 3 lines", {
  id = "integer", shipping = { city = "string", zip = "string~%d+" },
  lines = { { sku = "string(1..32)", qty = "integer(1..100)" }, min = 1 },
}, { id = 1, shipping = { city = "c", zip = "12345" },
     lines = { { sku = "A", qty = 1 }, { sku = "B", qty = 2 }, { sku = "C", qty = 3 } } }, 1e6)
