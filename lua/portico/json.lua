-- portico.json: strict JSON (RFC 8259) for everything portico reads from a
-- peer: request bodies (portico.runtime) and backend answers (portico.http).
--
--   json.decode(text) -> value | nil, "what at byte N"
--   json.utf8_bad(s)  -> position of the first byte that is not UTF-8 | nil
--
-- cjson decodes, but it takes more than JSON: NaN, Infinity, hex, "1.",
-- "-.5", control characters and any bytes in strings, text after a NUL, and
-- numbers that overflow to inf (which then cannot be encoded). In the host,
-- pt_json_check (host/pt_json.h) refuses all of that in one pass first, and
-- pt_utf8_check holds every JSON answer to UTF-8. Both are bound with the FFI:
-- a classic Lua C function would cost twice as much per request
-- (docs/contract.md, "Strict JSON"). Under busted there is no host: cjson's
-- own refusal of NaN, Infinity and hex and the UTF-8 check in Lua below are
-- what is left, enough for bodies portico.testing makes with cjson.encode.
local cjson_safe = require "cjson.safe"

local ok_host, host = pcall(require, "portico.host")
if not ok_host or type(host) ~= "table" then host = nil end

local find, byte, tonumber = string.find, string.byte, tonumber

local M = {}

local MAX_DEPTH = 1000 -- of nested arrays and objects: PT_JSON_MAX_DEPTH
local strict = cjson_safe.new() -- a private instance: its settings are not the services'
strict.decode_invalid_numbers(false)
strict.decode_max_depth(MAX_DEPTH)
local decode = strict.decode

-- utf8_bad(s) -> the position of the first byte of s that is not well-formed
-- UTF-8 (RFC 3629), or nil. json_check(s) -> true | nil, "what at byte N".
local utf8_bad, json_check
if host then
  local ffi = require "ffi"
  -- pcall: a second copy of this module in the same VM finds them declared
  pcall(ffi.cdef, [[
    typedef struct { size_t offset; const char *message; } pt_json_error_t;
    int pt_json_check(const char *s, size_t len, int max_depth, pt_json_error_t *err);
    int pt_utf8_check(const char *s, size_t len, size_t *bad);
  ]])
  local C = ffi.C
  local ok, err = pcall(function() return C.pt_json_check, C.pt_utf8_check end)
  if not ok then error("portico.json: the host exports no pt_json_check: " .. tostring(err)) end
  local jerr, bad = ffi.new("pt_json_error_t"), ffi.new("size_t[1]")
  local pt_json_check, pt_utf8_check, ffi_string = C.pt_json_check, C.pt_utf8_check, ffi.string
  utf8_bad = function(s)
    if pt_utf8_check(s, #s, bad) == 0 then return nil end
    return tonumber(bad[0]) + 1
  end
  json_check = function(s)
    if pt_json_check(s, #s, MAX_DEPTH, jerr) == 0 then return true end
    return nil, ffi_string(jerr.message) .. " at byte " .. tonumber(jerr.offset) + 1
  end
else
  utf8_bad = function(s)
    local i = 1
    while true do
      i = find(s, "[\128-\255]", i)
      if not i then return nil end
      local c, n, lo, hi = byte(s, i), 0, 0x80, 0xBF
      if c >= 0xC2 and c <= 0xDF then
        n = 2
      elseif c >= 0xE0 and c <= 0xEF then
        n = 3
        if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
      elseif c >= 0xF0 and c <= 0xF4 then
        n = 4
        if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
      else
        return i
      end
      local c2 = byte(s, i + 1)
      if not c2 or c2 < lo or c2 > hi then return i end
      for k = i + 2, i + n - 1 do
        local ck = byte(s, k)
        if not ck or ck < 0x80 or ck > 0xBF then return i end
      end
      i = i + n
    end
  end
  json_check = function(s)
    local at = utf8_bad(s)
    if at then return nil, "invalid UTF-8 at byte " .. at end
    return true
  end
end

-- json.decode(text) -> value | nil, err: strict JSON text to Lua (JSON null is
-- cjson.null). err is "<what> at byte N".
function M.decode(text)
  local ok, err = json_check(text)
  if not ok then return nil, err end
  return decode(text)
end

-- json.utf8_bad(s) -> the position of the first byte of s that is not
-- well-formed UTF-8, or nil.
M.utf8_bad = utf8_bad

return M

