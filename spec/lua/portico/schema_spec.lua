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
end)
