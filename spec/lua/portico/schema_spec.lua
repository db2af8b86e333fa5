local schema = require "portico.schema"

describe("portico.schema", function()
  it("accepts declared fields and keeps only them", function()
    local f = schema.compile({ id = "integer", name = "string?" }, "input")
    local out = assert(schema.check(f, { id = 5, extra = true }))
    assert.same({ id = 5 }, out)
  end)

  it("names every bad or missing field, sorted", function()
    local f = schema.compile({ id = "integer", name = "string", ok = "boolean" }, "input")
    local out, problems = schema.check(f, { id = 1.5, ok = "yes" })
    assert.is_nil(out)
    assert.same({ "id: expected integer, got number", "name: missing", "ok: expected boolean, got string" }, problems)
  end)

  it("refuses a value that is not an object", function()
    local f = schema.compile({ id = "integer" }, "input")
    local out, problems = schema.check(f, "x")
    assert.is_nil(out)
    assert.matches("expected a JSON object", problems[1])
  end)

  it("treats optional fields as optional", function()
    local f = schema.compile({ tenant = "string?" }, "input")
    assert.same({}, (schema.check(f, {})))
    local _, problems = schema.check(f, { tenant = 3 })
    assert.same({ "tenant: expected string, got integer" }, problems)
  end)

  it("refuses unknown types when compiling", function()
    assert.has_error(function() schema.compile({ id = "int" }, "input") end,
      "input schema: field id has unknown type 'int'")
    assert.has_error(function() schema.compile("x", "output") end)
  end)
end)
