local schema = require "portico.schema"
local cjson = require "cjson"

describe("portico.schema", function()
  local function check(def, value)
    return schema.check(schema.compile(def, "input"), value)
  end

  it("keeps only the declared fields, in a new table", function()
    local value = { id = 5, extra = true }
    local out = assert(check({ id = "integer", name = "string?" }, value))
    assert.same({ id = 5 }, out)
    assert.are_not.equal(value, out)
  end)

  it("names every bad or missing field, sorted by field", function()
    local out, problems = check({ zeta = "string", id = "integer", name = "string", ok = "boolean" },
      { id = 1.5, ok = "yes", zeta = 3 })
    assert.is_nil(out)
    assert.same({
      "id: expected integer, got number",
      "name: missing",
      "ok: expected boolean, got string",
      "zeta: expected string, got integer",
    }, problems)
    assert.equal("name: missing; ok: expected boolean, got string",
      schema.describe({ "name: missing", "ok: expected boolean, got string" }))
  end)

  it("accepts each type's values and refuses the others", function()
    local cases = {
      { "string", "x", 1 },
      { "integer", 123, 1.5 },
      { "integer", -7, 2 ^ 60 },
      { "number", 1.5, "1.5" },
      { "number", 3, 0 / 0 },
      { "boolean", false, 0 },
      { "object", { a = 1 }, { 1, 2 } },
      { "table", {}, "t" },
      { "array", { 1, 2 }, { a = 1 } },
      { "array", {}, { 1, 2, x = 3 } },
      { "any", "anything", nil },
    }
    for _, case in ipairs(cases) do
      local ty, good, bad = case[1], case[2], case[3]
      assert.is_truthy(check({ f = ty }, { f = good }), ty .. " should accept " .. tostring(good))
      local out, problems = check({ f = ty }, { f = bad })
      assert.is_nil(out, ty .. " should refuse " .. tostring(bad))
      assert.matches("^f: ", problems[1])
    end
  end)

  it("names the JSON type it got", function()
    local _, p = check({ a = "string", b = "string", c = "string", d = "string", e = "string" },
      { a = 1, b = 1.25, c = { 1 }, d = { k = 1 }, e = true })
    assert.same({
      "a: expected string, got integer", "b: expected string, got number",
      "c: expected string, got array", "d: expected string, got object",
      "e: expected string, got boolean",
    }, p)
  end)

  it("counts integers as cjson decodes them", function()
    assert.same({ n = 123 }, (check({ n = "integer" }, cjson.decode('{"n": 123}'))))
    assert.same({ n = 1e3 }, (check({ n = "integer" }, cjson.decode('{"n": 1e3}'))))
    assert.is_nil((check({ n = "integer" }, cjson.decode('{"n": 12.5}'))))
  end)

  it("treats null as absent for optional fields and as a problem for required ones", function()
    local out = assert(check({ t = "string?" }, { t = cjson.null }))
    assert.is_nil(out.t)
    local _, problems = check({ t = "string" }, { t = cjson.null })
    assert.same({ "t: expected string, got null" }, problems)
    assert.equal(cjson.null, assert(check({ t = "any" }, { t = cjson.null })).t)
  end)

  it("treats optional fields as optional but still checks their type", function()
    assert.same({}, (check({ tenant = "string?" }, {})))
    local _, problems = check({ tenant = "string?" }, { tenant = 3 })
    assert.same({ "tenant: expected string, got integer" }, problems)
  end)

  it("refuses a value that is not a JSON object", function()
    for _, v in ipairs({ "x", 3, { 1, 2 }, cjson.null, true }) do
      local out, problems = check({ id = "integer?" }, v)
      assert.is_nil(out)
      assert.equal(1, #problems)
      assert.matches("^expected a JSON object, got ", problems[1])
    end
    local _, problems = check({ id = "integer" }, nil)
    assert.same({ "expected a JSON object, got nothing" }, problems)
  end)

  it("refuses bad schemas when compiling", function()
    assert.has_error(function() schema.compile({ id = "int" }, "input") end)
    local ok, err = pcall(schema.compile, { id = "int" }, "input")
    assert.is_false(ok)
    assert.matches("input schema: field id has unknown type 'int'", err, 1, true)
    assert.is_false((pcall(schema.compile, "x", "output")))
    assert.is_false((pcall(schema.compile, { "integer" }, "output")))
    assert.is_false((pcall(schema.compile, { id = true }, "output")))
    assert.is_false((pcall(schema.compile, { id = "?" }, "output")))
    assert.is_nil(schema.compile(nil, "input"))
    assert.equal(0, #schema.compile({}, "input"))
  end)

  -- ---- models ----

  local function problems_of(def, value, opts)
    local out, p = schema.check(schema.compile(def, "input", opts), value)
    assert.is_nil(out)
    return p
  end

  local function compile_error(def, opts)
    local ok, err = pcall(schema.compile, def, "input", opts)
    assert.is_false(ok, "should not compile")
    return err
  end

  local order = {
    id = "integer",
    note = "string?",
    shipping = {
      city = "string",
      lines = { { sku = "string~^[A-Z]+$", qty = "integer(1..100)", tags = { "string" } }, min = 1 },
    },
  }

  it("checks nested objects and arrays to any depth, into new tables", function()
    local value = cjson.decode([[{"id": 1, "x": 2, "shipping": {"city": "Oslo", "y": 3,
      "lines": [{"sku": "AB", "qty": 2, "tags": ["a", "b"]}, {"sku": "C", "qty": 100, "tags": []}]}}]])
    local out = assert(schema.check(schema.compile(order, "input"), value))
    assert.same({ id = 1, shipping = { city = "Oslo", lines = {
      { sku = "AB", qty = 2, tags = { "a", "b" } }, { sku = "C", qty = 100, tags = {} } } } }, out)
    assert.are_not.equal(value.shipping, out.shipping)
    assert.is_nil(out.shipping.y)
    local deep = { a = { { { { b = { "integer" } } } } } }
    assert.same({ a = { { { { b = { 1, 2 } } } } } },
      (schema.check(schema.compile(deep), cjson.decode('{"a": [[[{"b": [1, 2]}]]]}'))))
    assert.same({ "a[0][0][1].b[1]: expected integer, got string" },
      problems_of(deep, cjson.decode('{"a": [[[{"b": [1]}, {"b": [2, "3"]}]]]}')))
  end)

  it("names the full path of every problem, arrays counted from 0", function()
    local p = problems_of(order, cjson.decode([[{"shipping": {"lines": [
      {"sku": "AB", "qty": 0, "tags": ["ok", 5]}, {"qty": 3, "tags": "no"}, {"sku": "ab", "qty": 1.5, "tags": []}]}}]]))
    assert.same({
      "id: missing",
      "shipping.city: missing",
      "shipping.lines[0].qty: expected 1 to 100, got 0",
      "shipping.lines[0].tags[1]: expected string, got integer",
      "shipping.lines[1].sku: missing",
      "shipping.lines[1].tags: expected array, got string",
      "shipping.lines[2].qty: expected integer, got number",
      'shipping.lines[2].sku: expected text matching ^[A-Z]+$, got "ab"',
    }, p)
    assert.same({ "shipping: expected object, got array" }, problems_of(order, { id = 1, shipping = { 1 } }))
    assert.same({ "shipping.lines: expected at least 1 items, got 0" },
      problems_of(order, { id = 1, shipping = { city = "x", lines = {} } }))
    assert.same({ "shipping.lines: expected array, got object" },
      problems_of(order, { id = 1, shipping = { city = "x", lines = { a = 1 } } }))
    assert.same({ "shipping.lines[0]: expected object, got null" },
      problems_of(order, { id = 1, shipping = { city = "x", lines = { cjson.null } } }))
  end)

  it("reports at most MAX_PROBLEMS problems and says how many it left out", function()
    local lines = {}
    for i = 1, 5000 do lines[i] = { qty = 1 } end
    local p = problems_of(order, { id = 1, shipping = { city = "x", lines = lines } })
    assert.equal(schema.MAX_PROBLEMS + 1, #p)
    assert.equal("shipping.lines[0].sku: missing", p[1])
    assert.matches("^%(%d+ more problems not shown%)$", p[#p])
    local long = {}
    for i = 1, 200 do long[("k"):rep(1000) .. i] = 1 end
    p = problems_of({}, long, { unknown = "reject" })
    assert.equal(schema.MAX_PROBLEMS + 1, #p)
    assert.is_true(#p[1] < 100, "a long unknown name is clipped")
  end)

  it("checks integer and number ranges", function()
    local def = { a = "integer(1..100)", b = "number(0..)", c = "number(..-0.5)", d = "integer(-5..-5)" }
    assert.same({ a = 1, b = 0, c = -1, d = -5 }, (check(def, { a = 1, b = 0, c = -1, d = -5 })))
    assert.same({ a = 100, b = 1e9, c = -0.5, d = -5 }, (check(def, { a = 100, b = 1e9, c = -0.5, d = -5 })))
    assert.same({
      "a: expected 1 to 100, got 101", "b: expected at least 0, got -0.25",
      "c: expected at most -0.5, got 0", "d: expected -5, got 5",
    }, problems_of(def, { a = 101, b = -0.25, c = 0, d = 5 }))
    assert.same({ "a: expected integer, got number" }, problems_of({ a = "integer(1..)" }, { a = 1.5 }))
  end)

  it("checks string lengths in UTF-8 characters and array lengths", function()
    local def = { s = "string(2..3)", t = "string(..2)?", l = { "integer", max = 2 }, u = "array(1..)" }
    assert.same({ s = "\195\169\195\169\195\169", l = {}, u = { 1 } },
      (check(def, { s = "\195\169\195\169\195\169", l = {}, u = { 1 } }))) -- "ééé": 3 characters
    assert.same({
      "l: expected at most 2 items, got 3", "s: expected 2 to 3 characters, got 1",
      "t: expected at most 2 characters, got 3", "u: expected at least 1 items, got 0",
    }, problems_of(def, { s = "x", t = "abc", l = { 1, 2, 3 }, u = {} }))
  end)

  it("matches patterns against the whole string", function()
    local def = { code = "string~[A-Z]+", zip = "string(5..5)~^%d+$", cur = "string~%u%u%u$" }
    assert.truthy(check(def, { code = "ABC", zip = "01234", cur = "EUR" }))
    assert.same({
      'code: expected text matching [A-Z]+, got "xABC"',
      'cur: expected text matching %u%u%u$, got "EURO"',
      'zip: expected text matching ^%d+$, got "1234a"',
    }, problems_of(def, { code = "xABC", zip = "1234a", cur = "EURO" }))
    -- an escaped $ is a character to match, not the anchor
    assert.truthy(check({ p = "string~%d+%$" }, { p = "12$" }))
    assert.falsy(check({ p = "string~%d+%$" }, { p = "12" }))
  end)

  it("bounds what patterns cost: a length cap by quantifiers, and a budget per check", function()
    -- three quantifiers: strings of at most 128 characters
    local c = schema.compile({ p = "string~a*a*a*b" }, "input")
    local _, p = schema.check(c, { p = ("a"):rep(129) })
    assert.same({ "p: expected at most 128 characters, got 129" }, p)
    _, p = schema.check(c, { p = ("a"):rep(128) })
    assert.same({ 'p: expected text matching a*a*a*b, got "' .. ("a"):rep(40) .. '..."' }, p)
    -- the budget: 2^24 steps of the matcher's worst case per check
    local many = {}
    for i = 1, 20 do many[i] = ("a"):rep(128) end
    _, p = schema.check(schema.compile({ l = { "string~a*a*a*b" } }, "input"), { l = many })
    assert.matches("^l%[%d+%]: too much to match against patterns in one request$", p[#p])
    -- one quantifier is linear: no cap beyond the field's own
    assert.truthy(schema.check(schema.compile({ p = "string~a+" }), { p = ("a"):rep(100000) }))
    assert.matches("more than 4 quantifiers", compile_error({ p = "string~a*b*c*d*e?" }))
    assert.matches("allows 200 characters, more than its pattern checks %(128 for 3 quantifiers%)",
      compile_error({ p = "string(..200)~a*b*c*" }))
  end)

  it("checks enums, short and long", function()
    local def = { status = "enum(new, paid,shipped)", n = schema.field { type = "integer", enum = { 1, 2, 3 } } }
    assert.same({ status = "paid", n = 2 }, (check(def, { status = "paid", n = 2 })))
    assert.same({ 'n: expected one of 1, 2, 3, got 4', 'status: expected one of new, paid, shipped, got "PAID"' },
      problems_of(def, { status = "PAID", n = 4 }))
    assert.same({ "n: expected integer, got string", "status: expected string, got integer" },
      problems_of(def, { status = 1, n = "1" }))
    assert.same({ e = "b" }, (check({ e = schema.field { enum = { "a", "b" } } }, { e = "b" })))
  end)

  it("fills defaults for absent and null fields, and copies table defaults", function()
    local def = {
      page = "integer(1..)=1", size = "integer(1..100)=20", sort = "enum(asc,desc)=asc",
      q = "string=", on = "boolean=false", ratio = "number=0.5",
      opts = schema.field { type = { a = "integer" }, default = { a = 1 } },
    }
    local out = assert(check(def, { size = 5, sort = cjson.null }))
    assert.same({ page = 1, size = 5, sort = "asc", q = "", on = false, ratio = 0.5, opts = { a = 1 } }, out)
    out.opts.a = 2
    assert.same({ a = 1 }, assert(check(def, {})).opts)
    assert.same({ "size: expected 1 to 100, got 0" }, problems_of(def, { size = 0 }))
  end)

  it("takes the long form and schema.optional", function()
    local def = {
      name = schema.field { type = "string", min = 1, max = 5, pattern = "%a+", description = "who" },
      address = schema.optional { city = "string" },
      tags = schema.optional { "string" },
      lines = schema.field { type = { { sku = "string" } }, min = 1, max = 2 },
      age = schema.field { type = "integer", optional = true, min = 0 },
    }
    assert.same({ name = "ann", lines = { { sku = "x" } } }, (check(def, { name = "ann", lines = { { sku = "x" } } })))
    assert.same({
      "address.city: missing", "age: expected at least 0, got -1", "lines: expected 1 to 2 items, got 3",
      'name: expected text matching %a+, got "a1"',
    }, problems_of(def, { name = "a1", address = {}, age = -1, lines = { { sku = "a" }, { sku = "b" }, { sku = "c" } } }))
    assert.has_error(function() schema.field { typ = "string" } end,
      "schema.field: unknown key 'typ' (known: type, optional, default, min, max, pattern, enum, description)")
  end)

  it("refuses unknown fields at every level with unknown = reject", function()
    local def = { id = "integer", shipping = { city = "string", lines = { { sku = "string" } } } }
    local opts = { unknown = "reject" }
    assert.truthy(schema.check(schema.compile(def, "input", opts),
      { id = 1, shipping = { city = "x", lines = { { sku = "a" } } } }))
    assert.same({
      "shipping.lines[0].zz: unknown field", "shipping.x: unknown field", "a: unknown field", "b: unknown field",
    }, problems_of(def, { id = 1, a = 1, b = 2, shipping = { city = "x", x = 1, lines = { { sku = "a", zz = 1 } } } }, opts))
    assert.truthy(check(def, { id = 1, a = 1, shipping = { city = "x", x = 1, lines = {} } }))
    assert.matches('unknown must be "ignore" or "reject", got maybe', compile_error({}, { unknown = "maybe" }))
  end)

  it("converts text (a query, path captures) to the declared scalars", function()
    local c = schema.compile({
      id = "integer", price = "number?", on = "boolean?", name = "string?", tags = { "integer" },
      any = "any?", raw = "array?", page = "integer=1",
    }, "input")
    local out = assert(schema.check_text(c, { id = "123", price = "-1.5e2", on = "0", name = "007", tags = { "1", "2" },
      any = { "x", "y" }, raw = "one" }))
    assert.same({ id = 123, price = -150, on = false, name = "007", tags = { 1, 2 }, any = { "x", "y" },
      raw = { "one" }, page = 1 }, out)
    assert.same({ 1 }, assert(schema.check_text(c, { id = "1", tags = "1" })).tags)
    for _, b in ipairs({ { "true", true }, { "false", false }, { "1", true }, { "0", false } }) do
      assert.equal(b[2], assert(schema.check_text(c, { id = "1", tags = {}, on = b[1] })).on)
    end
    local _, p = schema.check_text(c, { id = { "1", "2" }, price = "1.", on = "yes", tags = { "1", "x" } })
    assert.same({
      "id: given more than once", 'on: expected boolean, got "yes"', 'price: expected number, got "1."',
      'tags[1]: expected integer, got "x"',
    }, p)
    for _, bad in ipairs({ "", " 1", "1e3", "0x10", "1.0", "+1", "9007199254740993", ("9"):rep(30) }) do
      local _, q = schema.check_text(c, { id = bad, tags = {} })
      assert.same({ "id: expected integer, got " .. '"' .. (#bad > 40 and bad:sub(1, 40) .. "..." or bad) .. '"' }, q, bad)
    end
    for _, bad in ipairs({ "nan", "inf", "1e999", ".5", "-", "1e", "--1" }) do
      local _, q = schema.check_text(c, { id = "1", tags = {}, price = bad })
      assert.equal(1, #q, bad)
    end
    _, p = schema.check_text(schema.compile({ a = { b = "string" } }), { a = "x" })
    assert.same({ "a: expected object, got string" }, p)
    _, p = schema.check_text(c, nil)
    assert.same({ "id: missing", "tags: missing" }, p)
  end)

  it("adds text fields (captures) to a body, refusing one given twice, and skips a name", function()
    local c = schema.compile({ id = "integer", name = "string", service = "string?" }, "input")
    assert.same({ id = 7, name = "x" }, (schema.check(c, { name = "x" }, { id = "7" })))
    local _, p = schema.check(c, { id = 7, name = "x" }, { id = "7" })
    assert.same({ "id: given both in the path and in the body" }, p)
    _, p = schema.check_text(c, { id = "7", name = "x" }, { id = "8" })
    assert.same({ "id: given both in the path and in the query" }, p)
    -- skip: a gateway's "service" is never input, and is no unknown field either
    assert.same({ id = 1, name = "x" }, (schema.check_text(c, { id = "1", name = "x", service = "s" }, nil, "service")))
    local r = schema.compile({ id = "integer" }, "input", { unknown = "reject" })
    assert.same({ id = 1 }, (schema.check_text(r, { id = "1", service = "s" }, { service = "s" }, "service")))
    -- a body may carry it
    assert.same({ id = 1, name = "x", service = "b" },
      (schema.check(c, { id = 1, name = "x", service = "b" }, { service = "s" }, "service")))
    -- captures the schema does not name are the route's: never unknown
    assert.same({ id = 1 }, (schema.check(r, { id = 1 }, { tenant = "acme" })))
  end)

  it("refuses bad models when compiling, naming the field's path", function()
    local cases = {
      { { a = { b = { c = "strin" } } }, "input schema: field a.b.c has unknown type 'strin'" },
      { { a = { { b = "int" } } }, "input schema: field a[].b has unknown type 'int'" },
      { { a = { "string", "integer" } }, "field a is an array type { T } with more than one element" },
      { { a = { "string", size = 3 } }, "unknown key 'size'" },
      { { a = { "string?" } }, "field a[] is optional or has a default: the items of an array cannot" },
      { { a = "integer(5..1)" }, "field a has a range whose low end is above its high end" },
      { { a = "integer(1.5..2)" }, "field a has a bound that is not a whole number: 1.5" },
      { { a = "integer(1-2)" }, "field a has a bad range '(1-2)'" },
      { { a = "integer(..)" }, "field a has a bad range '(..)'" },
      { { a = "string(-1..2)" }, "field a has a negative length" },
      { { a = "boolean(1..2)" }, "field a has a range, which only string, integer, number and array take" },
      { { a = "integer~%d" }, "field a has a pattern, which only string takes" },
      { { a = "string~(%d+)" }, "captures are not allowed" },
      { { a = "string~%1" }, "has a pattern with %1" },
      { { a = "string~%bxy" }, "has a pattern with %b" },
      { { a = "string~[a-z" }, "has a pattern with an unclosed [" },
      { { a = "string~*a" }, "has a pattern starting with *" },
      { { a = "string~" }, "has an empty pattern" },
      { { a = "string~a%" }, "has a pattern ending in %" },
      { { a = "enum" }, "field a has enum without its values: enum(a,b,c)" },
      { { a = "enum()" }, "has an empty enum value" },
      { { a = "enum(a,a)" }, "has the enum value a twice" },
      { { a = "integer=x" }, "field a has a default 'x' that is not an integer" },
      { { a = "boolean=yes" }, "field a has a default 'yes' that is not a boolean" },
      { { a = "object={}" }, "not possible in the short form for object" },
      { { a = "enum(a,b)=c" }, "field a has a default that fails its own type: expected one of a, b, got \"c\"" },
      { { a = "integer(1..)=0" }, "has a default that fails its own type: expected at least 1, got 0" },
      { { a = "integer?=1" }, "has both ? and a default" },
      { { a = 5 }, "field a must map to a type" },
      { { a = schema.field { min = 1 } }, "field a has schema.field{} without a type" },
      { { a = schema.field { type = "integer(1..2)" } }, "schema.field takes a bare type name" },
      { { a = schema.field { type = schema.field { type = "string" } } }, "as the type of another" },
      { { a = schema.field { type = { b = "string" }, min = 1 } }, "has min or max on an object" },
      { { a = schema.field { type = "string", enum = { 1 } } }, "has an enum value that is not a string: 1" },
      { { a = schema.field { type = "string", enum = {} } }, "has an enum that is not a non-empty list" },
      { { a = schema.field { type = "boolean", enum = { true } } }, "has an enum value that is not a boolean" },
      { { a = schema.field { type = "string", optional = "yes" } }, "has optional that is not true or false" },
      { { a = schema.field { type = "string", optional = true, default = "x" } }, "has both optional and a default" },
      { { a = schema.field { type = "integer", default = "1" } }, "has a default that fails its own type" },
      { { a = schema.field { type = "string", min = 0.5 } }, "has a bound that is not a whole number: 0.5" },
      { { [1] = "string" }, "input schema must be a table of field = type (an object)" },
      { { [true] = "string" }, "input schema: field names must be non-empty strings, got true" },
      { { a = { [""] = "string" } }, "field a has field names must be non-empty strings" },
    }
    for _, case in ipairs(cases) do
      local err = compile_error(case[1])
      assert.is_truthy(err:find(case[2], 1, true), "got: " .. err .. "\nwanted: " .. case[2])
    end
    local cyclic = { b = "string" }
    cyclic.self = cyclic
    assert.matches("field self holds its own schema %(a cycle%)", compile_error(cyclic))
    local deep = "string"
    for _ = 1, 40 do deep = { x = deep } end
    assert.matches("is nested deeper than 32 levels", compile_error(deep))
    -- the same table twice (not a cycle) is fine
    local addr = { city = "string" }
    assert.truthy(schema.compile({ from = addr, to = addr, via = { addr } }))
  end)
end)
