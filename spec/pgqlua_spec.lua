-- spec/helper.lua (loaded through .busted) preloads a fake "pgqlua.host".
local host = require "pgqlua.host"
local payload = require "pgqlua.payload"
local pgq = require "pgqlua"

describe("pgqlua", function()
  before_each(function()
    host.reset()
  end)

  describe("result constants", function()
    it("defines EVENT_OK as 1", function()
      assert.are.equal(1, pgq.EVENT_OK)
    end)

    it("defines EVENT_FAILED as 2", function()
      assert.are.equal(2, pgq.EVENT_FAILED)
    end)

    it("defines EVENT_RETRY as 3", function()
      assert.are.equal(3, pgq.EVENT_RETRY)
    end)

    it("defines ABORT_BATCH as 4", function()
      assert.are.equal(4, pgq.ABORT_BATCH)
    end)

    it("makes them integers", function()
      for _, name in ipairs({ "EVENT_OK", "EVENT_FAILED", "EVENT_RETRY", "ABORT_BATCH" }) do
        assert.are.equal("integer", math.type(pgq[name]), name)
      end
    end)
  end)

  describe("log", function()
    it("has exactly the functions error, warn, info and debug", function()
      local names = {}
      for name, f in pairs(pgq.log) do
        assert.is_function(f)
        names[#names + 1] = name
      end
      table.sort(names)
      assert.are.same({ "debug", "error", "info", "warn" }, names)
    end)

    it("formats its arguments: info(\"x %d\", 5) calls host.log(2, \"x 5\")", function()
      pgq.log.info("x %d", 5)
      assert.are.same({ { level = 2, message = "x 5" } }, host.calls)
    end)

    it("logs error at level 0", function()
      pgq.log.error("e")
      assert.are.same({ { level = 0, message = "e" } }, host.calls)
    end)

    it("logs warn at level 1", function()
      pgq.log.warn("w")
      assert.are.same({ { level = 1, message = "w" } }, host.calls)
    end)

    it("logs info at level 2", function()
      pgq.log.info("i")
      assert.are.same({ { level = 2, message = "i" } }, host.calls)
    end)

    it("logs debug at level 3", function()
      pgq.log.debug("d")
      assert.are.same({ { level = 3, message = "d" } }, host.calls)
    end)

    it("passes a message without arguments unchanged", function()
      pgq.log.info("plain")
      assert.are.same({ { level = 2, message = "plain" } }, host.calls)
    end)

    it("passes a message with a % but no arguments unchanged", function()
      pgq.log.info("100% done, %d items, %s")
      assert.are.same({ { level = 2, message = "100% done, %d items, %s" } }, host.calls)
    end)

    it("converts a non-string message without arguments with tostring", function()
      pgq.log.warn(42)
      pgq.log.warn(pgq.null)
      assert.are.same({ { level = 1, message = "42" }, { level = 1, message = "pgq.null" } }, host.calls)
    end)

    it("formats several arguments, nil included", function()
      pgq.log.debug("%s=%s (%d)", "k", nil, 3)
      assert.are.same({ { level = 3, message = "k=nil (3)" } }, host.calls)
    end)

    it("makes one host.log call per log call", function()
      pgq.log.error("one")
      pgq.log.info("two %s", "b")
      assert.are.same({
        { level = 0, message = "one" },
        { level = 2, message = "two b" },
      }, host.calls)
    end)

    it("raises string.format's error for a bad format", function()
      assert.has_error(function() pgq.log.info("%d", "x") end,
        "bad argument #2 to 'format' (number expected, got string)")
      assert.are.same({}, host.calls)
    end)
  end)

  describe("payload functions", function()
    it("exposes payload.urldecode as pgq.urldecode", function()
      assert.are.equal(payload.urldecode, pgq.urldecode)
    end)

    it("exposes payload.json_decode as pgq.json_decode", function()
      assert.are.equal(payload.json_decode, pgq.json_decode)
    end)

    it("exposes payload.null as pgq.null", function()
      assert.are.equal(payload.null, pgq.null)
    end)

    it("decodes JSON null to pgq.null", function()
      assert.are.equal(pgq.null, pgq.json_decode('{"a": null}').a)
    end)
  end)
end)
