-- The mock runner against the contract fixtures in spec/contract/: each
-- fixture's script runs through pgqlua.testing, and the lines the runtime
-- would log (statements, outcomes, retries, failed events, a rolled-back
-- batch) must equal the ones its expectations give.  The same fixtures run
-- through the real runtime in tests/integration/t_contract.sh.
package.path = "spec/contract/?.lua;" .. package.path
local contract = require "contract"
local testing = require "pgqlua.testing"

local DIR = "spec/contract"

describe("the contract fixtures", function()
  local names = contract.list(DIR)

  it("are there", function()
    assert.is_true(#names >= 5)
  end)

  for _, name in ipairs(names) do
    describe(name, function()
      local spec = contract.load(DIR, name)
      local run = testing.run(spec.script, spec.events, { config = spec.config, answers = spec.answers,
        http_answers = spec.http_answers, mail_answers = spec.mail_answers })

      it("runs through the mock runner as its expectations say", function()
        for i, r in ipairs(run.events) do
          if spec.expects[i] then
            assert.outcome(r, spec.expects[i])
          end
        end
        if spec.expect_batch then
          local ok, problems = testing.check_batch(run, spec.expect_batch)
          assert(ok, table.concat(problems or {}, "\n"))
        end
      end)

      it("logs exactly the lines the runtime must log", function()
        local ok, diff = contract.compare(contract.expected_lines(spec), contract.mock_lines(run))
        assert(ok, diff)
      end)
    end)
  end
end)
