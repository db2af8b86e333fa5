-- portico.json without the host: cjson's own refusals plus the UTF-8 check in
-- Lua (the host's pt_json_check is held to jansson by fuzz/fuzz_json.c, and the
-- integration tier sends every refused body through the built binary).
local json = require "portico.json"
local cjson = require "cjson"

describe("portico.json", function()
  it("decodes JSON", function()
    assert.same({ a = { 1, 2 }, s = "caf\195\169" }, json.decode('{"a": [1, 2], "s": "caf\195\169"}'))
    assert.equal(cjson.null, json.decode("null"))
  end)

  it("refuses what is not JSON with what and where", function()
    for _, text in ipairs { "NaN", "Infinity", "0x7B", "[1,", "" } do
      local v, err = json.decode(text)
      assert.is_nil(v, text)
      assert.is_string(err, text)
    end
    local v, err = json.decode('"caf\233"')
    assert.is_nil(v)
    assert.equal("invalid UTF-8 at byte 5", err)
  end)

  it("finds the first byte that is not UTF-8", function()
    assert.is_nil(json.utf8_bad("caf\195\169 \240\159\152\128"))
    assert.equal(4, json.utf8_bad("caf\233"))
    assert.equal(1, json.utf8_bad("\192\175"))     -- overlong '/'
    assert.equal(1, json.utf8_bad("\237\160\128")) -- an encoded surrogate
    assert.equal(3, json.utf8_bad("ab\240\159\152")) -- cut short
  end)
end)
