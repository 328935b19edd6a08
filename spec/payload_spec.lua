local payload = require "pgqlua.payload"

local null = payload.null

describe("pgqlua.payload", function()
  describe("null", function()
    it("prints as pgq.null", function()
      assert.are.equal("pgq.null", tostring(null))
    end)

    it("raises 'pgq.null is read-only' when a field is assigned", function()
      assert.has_error(function() null.x = 1 end, "pgq.null is read-only")
      assert.is_nil(rawget(null, "x"))
    end)

    it("hides its metatable behind the name pgq.null", function()
      assert.are.equal("pgq.null", getmetatable(null))
      assert.has_error(function() setmetatable(null, {}) end, "cannot change a protected metatable")
    end)

    it("is distinct from nil, false and an empty table", function()
      assert.is_not_nil(null)
      assert.is_truthy(null)
      assert.are_not.equal({}, null)
    end)
  end)

  describe("urldecode", function()
    it("decodes a pgq.logutriga row and maps a key without '=' to pgq.null", function()
      local row = payload.urldecode("id=1&name=x%20y&note")
      assert.are.same({ id = "1", name = "x y", note = null }, row)
      assert.are.equal(null, row.note)
    end)

    it("keeps every value a string", function()
      local row = payload.urldecode("id=42&ratio=0.5")
      assert.are.equal("string", type(row.id))
      assert.are.equal("42", row.id)
      assert.are.equal("0.5", row.ratio)
    end)

    it("turns '+' into a space", function()
      assert.are.same({ name = "a b c" }, payload.urldecode("name=a+b+c"))
    end)

    it("decodes %XX escapes in upper and lower case", function()
      assert.are.same({ s = "a&b=c%d/e" }, payload.urldecode("s=a%26b%3dc%25d%2Fe"))
    end)

    it("decodes an escaped '+' as a literal plus sign", function()
      assert.are.same({ expr = "1+1 = 2" }, payload.urldecode("expr=1%2B1+%3D+2"))
    end)

    it("decodes percent-encoded multibyte UTF-8", function()
      local row = payload.urldecode("city=Z%C3%BCrich&word=%E2%82%AC%F0%9F%98%80")
      assert.are.equal("Zürich", row.city)
      assert.are.equal("€😀", row.word)
      assert.are.equal(2, utf8.len(row.word))
    end)

    it("decodes escapes in keys too", function()
      assert.are.same({ ["first name"] = "Ann" }, payload.urldecode("first%20name=Ann"))
    end)

    it("leaves a malformed escape as it is", function()
      assert.are.same({ v = "100%", w = "%zz" }, payload.urldecode("v=100%&w=%zz"))
    end)

    it("returns an empty table for an empty string", function()
      assert.are.same({}, payload.urldecode(""))
    end)

    it("splits on the first '=' only, so values may contain '='", function()
      assert.are.same({ a = "b=c" }, payload.urldecode("a=b=c"))
    end)

    it("maps 'key=' to an empty string, not to pgq.null", function()
      local row = payload.urldecode("empty=&missing")
      assert.are.equal("", row.empty)
      assert.are.equal(null, row.missing)
    end)

    it("skips empty parts between '&' separators", function()
      assert.are.same({ a = "1", b = "2" }, payload.urldecode("&a=1&&b=2&"))
    end)

    it("keeps the last value when a key repeats", function()
      assert.are.same({ a = "2" }, payload.urldecode("a=1&a=2"))
    end)

    it("raises 'pgq.urldecode: expected a string, got nil' for nil", function()
      assert.has_error(function() payload.urldecode(nil) end,
        "pgq.urldecode: expected a string, got nil")
    end)

    it("raises 'pgq.urldecode: expected a string, got pgq.null' for pgq.null", function()
      assert.has_error(function() payload.urldecode(null) end,
        "pgq.urldecode: expected a string, got pgq.null")
    end)

    it("raises 'pgq.urldecode: expected a string, got number' for a number", function()
      assert.has_error(function() payload.urldecode(1) end,
        "pgq.urldecode: expected a string, got number")
    end)

    it("raises 'pgq.urldecode: expected a string, got table' for a table", function()
      assert.has_error(function() payload.urldecode({}) end,
        "pgq.urldecode: expected a string, got table")
    end)

    it("blames the caller's line for a bad argument", function()
      local ok, err = pcall(function() payload.urldecode(nil) end)
      assert.is_false(ok)
      assert.matches("payload_spec%.lua:%d+: pgq%.urldecode: expected a string, got nil$", err)
    end)
  end)

  describe("json_decode", function()
    it("keeps integers as Lua integers", function()
      local v = payload.json_decode('{"id": 42, "neg": -7, "zero": 0}')
      assert.are.equal(42, v.id)
      assert.are.equal("integer", math.type(v.id))
      assert.are.equal("integer", math.type(v.neg))
      assert.are.equal("integer", math.type(v.zero))
    end)

    it("keeps floats as Lua floats, even when they are whole", function()
      local v = payload.json_decode('[1.5, 2.0, 1e3, -0.25]')
      assert.are.same({ 1.5, 2.0, 1000.0, -0.25 }, v)
      for i = 1, #v do
        assert.are.equal("float", math.type(v[i]))
      end
    end)

    it("decodes a top-level integer and a top-level float", function()
      assert.are.equal("integer", math.type(payload.json_decode("7")))
      assert.are.equal("float", math.type(payload.json_decode("7.5")))
    end)

    it("keeps integers beyond int64 exact, as strings of their digits", function()
      local v = payload.json_decode(
        '{"big": 12345678901234567890123, "neg": -9223372036854775809, "max": 9223372036854775807,' ..
        ' "min": -9223372036854775808, "s": "99999999999999999999", "f": 12345678901234567890.5,' ..
        ' "list": [18446744073709551616, 1]}')
      assert.are.equal("12345678901234567890123", v.big)
      assert.are.equal("-9223372036854775809", v.neg)
      assert.are.equal(math.maxinteger, v.max)
      assert.are.equal("integer", math.type(v.max))
      assert.are.equal(math.mininteger, v.min)
      assert.are.equal("99999999999999999999", v.s)
      assert.are.equal("float", math.type(v.f))
      assert.are.same({ "18446744073709551616", 1 }, v.list)
      assert.are.equal("100000000000000000000", payload.json_decode("100000000000000000000"))
    end)

    it("reports a syntax error in a text with a big integer at its own position", function()
      assert.has_error(function() payload.json_decode("[12345678901234567890123,,2]") end,
        "pgq.json_decode: no valid JSON value at line 1, column 26")
    end)

    it("maps JSON null to pgq.null", function()
      assert.are.equal(null, payload.json_decode("null"))
      local v = payload.json_decode('{"a": null, "b": [null, 1]}')
      assert.are.equal(null, v.a)
      assert.are.equal(null, v.b[1])
      assert.are.equal(1, v.b[2])
    end)

    it("decodes strings, booleans and unicode escapes", function()
      local v = payload.json_decode('{"s": "Z\\u00fcrich \\"q\\"", "t": true, "f": false, "e": "€"}')
      assert.are.equal('Zürich "q"', v.s)
      assert.is_true(v.t)
      assert.is_false(v.f)
      assert.are.equal("€", v.e)
    end)

    it("decodes nested objects and arrays", function()
      local v = payload.json_decode([[
        {"op": "I", "row": {"id": 1, "tags": ["a", "b"], "meta": {"deep": [[1, 2], {"x": 3}]}}, "empty": [], "none": {}}
      ]])
      assert.are.same({
        op = "I",
        row = { id = 1, tags = { "a", "b" }, meta = { deep = { { 1, 2 }, { x = 3 } } } },
        empty = {},
        none = {},
      }, v)
    end)

    it("raises an error starting with 'pgq.json_decode: ' on malformed JSON", function()
      for _, bad in ipairs({ "", "   ", "{", '{"a":', "[1,", "[1,,2]", '"abc', "{a:1}", "tru", "[1}", "[0x10]" }) do
        local ok, err = pcall(payload.json_decode, bad)
        assert.is_false(ok, "accepted " .. string.format("%q", bad))
        assert.matches("^pgq%.json_decode: .+", err)
      end
    end)

    it("reports the reason and position of a syntax error", function()
      assert.has_error(function() payload.json_decode("[1,,2]") end,
        "pgq.json_decode: no valid JSON value at line 1, column 4")
      assert.has_error(function() payload.json_decode("") end,
        "pgq.json_decode: no valid JSON value (reached the end)")
    end)

    it("refuses JSON nested too deeply for the decoder with a clear error", function()
      assert.has_error(function() payload.json_decode(("["):rep(70000)) end,
        "pgq.json_decode: nested too deeply")
    end)

    it("refuses text after the JSON value", function()
      for _, bad in ipairs({ '{"a":1} garbage', "0x10", "1 2" }) do
        assert.has_error(function() payload.json_decode(bad) end,
          string.format("pgq.json_decode: unexpected text after the JSON value at position %d",
            bad:find("[^ ]", (bad:find(" ") or bad:find("x")))))
      end
      assert.are.same({ 1 }, payload.json_decode(" [1] \n\t"))
    end)

    it("raises 'pgq.json_decode: expected a string, got nil' for nil", function()
      assert.has_error(function() payload.json_decode(nil) end,
        "pgq.json_decode: expected a string, got nil")
    end)

    it("raises 'pgq.json_decode: expected a string, got pgq.null' for pgq.null", function()
      assert.has_error(function() payload.json_decode(null) end,
        "pgq.json_decode: expected a string, got pgq.null")
    end)

    it("raises 'pgq.json_decode: expected a string, got number' for a number", function()
      assert.has_error(function() payload.json_decode(5) end,
        "pgq.json_decode: expected a string, got number")
    end)

    it("raises 'pgq.json_decode: expected a string, got table' for a table", function()
      assert.has_error(function() payload.json_decode({}) end,
        "pgq.json_decode: expected a string, got table")
    end)
  end)
end)
