-- pgqlua.mail (what pgq.mail.send does around the transport) and the mock
-- runner's mail: answer_mail, answer_mail_once, run[i].mails,
-- assert.mailed and `pgqlua test` with mail_answers.
local testing = require "pgqlua.testing"
local mail = require "pgqlua.mail"
local cli_test = require "pgqlua.cli_test"

local CTX = { url = "smtp://127.0.0.1:25/", timeout = 30 }

local function header(data, name)
  return data:match("\r\n" .. name .. ": ([^\r]*)") or data:match("^" .. name .. ": ([^\r]*)")
end

describe("pgqlua.mail", function()
  it("writes the message: headers, a 7bit text body with CRLF line ends, the envelope", function()
    local p = assert(mail.prepare({ from = "Shop <shop@x.test>", to = { "a@x.test", "B <b@x.test>" },
                                    cc = "c@x.test", bcc = "d@x.test", subject = "Order 7",
                                    text = "Hello\nbye", headers = { ["Reply-To"] = "help@x.test" } }, CTX))
    assert.equal("shop@x.test", p.from)
    assert.same({ "a@x.test", "b@x.test", "c@x.test", "d@x.test" }, p.rcpt)
    assert.equal("Shop <shop@x.test>", header(p.data, "From"))
    assert.equal("a@x.test,", header(p.data, "To"))
    assert.truthy(p.data:find("\r\n B <b@x.test>\r\n", 1, true))
    assert.equal("c@x.test", header(p.data, "Cc"))
    assert.is_nil(header(p.data, "Bcc"))
    assert.equal("Order 7", header(p.data, "Subject"))
    assert.equal("help@x.test", header(p.data, "Reply%-To"))
    assert.equal("text/plain; charset=utf-8", header(p.data, "Content%-Type"))
    assert.equal("7bit", header(p.data, "Content%-Transfer%-Encoding"))
    assert.truthy(header(p.data, "Date"):match("^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d %+0000$"))
    assert.equal("\r\n\r\nHello\r\nbye\r\n", p.data:sub(-16))
    assert.equal(30.0, p.timeout)
  end)

  it("encodes a subject beyond ASCII and a body beyond ASCII as quoted-printable", function()
    local p = assert(mail.prepare({ from = "s@x.test", to = "a@x.test", subject = "Grüße", text = "café = ok" },
      CTX))
    assert.equal("=?UTF-8?B?R3LDvMOfZQ==?=", header(p.data, "Subject"))
    assert.equal("quoted-printable", header(p.data, "Content%-Transfer%-Encoding"))
    assert.truthy(p.data:find("\r\n\r\ncaf=C3=A9 =3D ok\r\n$"))
  end)

  it("sends text and html as multipart/alternative", function()
    local p = assert(mail.prepare({ from = "s@x.test", to = "a@x.test", text = "hi", html = "<p>hi</p>" }, CTX))
    local b = header(p.data, "Content%-Type"):match('^multipart/alternative; boundary="(.*)"$')
    assert.truthy(b)
    assert.truthy(p.data:find("--" .. b .. "\r\nContent-Type: text/plain; charset=utf-8\r\n", 1, true))
    assert.truthy(p.data:find("--" .. b .. "\r\nContent-Type: text/html; charset=utf-8\r\n", 1, true))
    assert.equal("--" .. b .. "--\r\n", p.data:sub(-(#b + 6)))
  end)

  it("breaks long quoted-printable lines softly, never inside an escape", function()
    local qp = mail.quoted_printable(string.rep("é", 60) .. "\r\n")
    for line in qp:gmatch("([^\r\n]*)\r\n") do assert.truthy(#line <= 76) end
    assert.equal(string.rep("=C3=A9", 60), (qp:gsub("=\r\n", ""):gsub("\r\n$", "")))
  end)

  it("refuses what it cannot send, with the reason", function()
    assert.same({ nil, "pgq.mail.send: no smtp_url in the config (smtp://host:port or smtps://...)" },
      { mail.prepare({ from = "s@x.test", to = "a@x.test", text = "x" }, { timeout = 30 }) })
    assert.same({ nil, "pgq.mail.send: to is required (an address or a list of them)" },
      { mail.prepare({ from = "s@x.test", text = "x" }, CTX) })
    assert.same({ nil, "pgq.mail.send: to: not a mail address: a@x.test?Bcc: e@x.test" },
      { mail.prepare({ from = "s@x.test", to = "a@x.test\nBcc: e@x.test", text = "x" }, CTX) })
    assert.same({ nil, 'pgq.mail.send: from must be a mail address ("a@b" or "Name <a@b>"), not nil' },
      { mail.prepare({ to = "a@x.test", text = "x" }, CTX) })
    assert.same({ nil, "pgq.mail.send: give text, html or both" },
      { mail.prepare({ from = "s@x.test", to = "a@x.test" }, CTX) })
    assert.same({ nil, "pgq.mail.send: subject must be a string without line breaks" },
      { mail.prepare({ from = "s@x.test", to = "a@x.test", subject = "a\r\nBcc: x", text = "x" }, CTX) })
    assert.same({ nil, "pgq.mail.send: header To is set from the message's fields" },
      { mail.prepare({ from = "s@x.test", to = "a@x.test", text = "x", headers = { To = "b@x.test" } }, CTX) })
  end)

  it("shows smtp_url without its login, query or fragment, as the runtime does", function()
    assert.equal("smtps://mail.test:465/", mail.safe_url("smtps://u:secret@mail.test:465"))
    assert.equal("smtp://h/x", mail.safe_url("smtp://h/x?token=1"))
  end)

  it("words a refusal and transport errors as the runtime does", function()
    assert.equal("Failed sending data to the peer (RCPT failed: 550); the server said: 550 5.1.1 no such user",
      mail.reason("550 5.1.1 no such user"))
    assert.equal("Timeout was reached (after 5 seconds)", mail.reason("timeout", { timeout = 5 }))
    assert.equal("Couldn't connect to server", mail.reason("connect"))
  end)
end)

describe("the mock runner's pgq.mail", function()
  local consumer, dir, path
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)
  before_each(function()
    dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir '" .. dir .. "'"))
    path = dir .. "/mailer.lua"
    local f = assert(io.open(path, "w"))
    f:write([[
function process_event(ev, db)
  db:exec("insert into mailed values ($1)", ev.data)
  pgq.mail.send{ from = "shop@x.test", to = ev.data, cc = { "log@x.test" }, subject = "order " .. ev.id,
                 text = "thanks" }
end
]])
    f:close()
    consumer = testing.load(path, { config = { queue_name = "q", consumer_name = "c",
                                               smtp_url = "smtp://u:pw@mail.test:25" } })
  end)

  it("lists each event's mails and checks them with assert.mailed", function()
    local run = consumer:run({ { data = "ann@x.test" }, { data = "bo@x.test" } })
    assert.outcome(run[1], "OK")
    assert.equal(1, #run[1].mails)
    assert.same({ "ann@x.test" }, run[1].mails[1].to)
    assert.same({ "log@x.test" }, run[1].mails[1].cc)
    assert.equal("order 1", run[1].mails[1].subject)
    assert.equal("thanks", run[1].mails[1].text)
    assert.equal(2, #run.mails)
    assert.mailed(run[2], "bo@x.test")
    assert.mailed(run, "log@")
    assert.is_not.mailed(run[1], "bo@x.test")
  end)

  it("refuses a recipient as the server does: the event is an error naming the server's reason", function()
    consumer:answer_mail("nobody@", testing.mail_error("550 5.1.1 <nobody@x.test>: no such user"))
    local r = consumer:event({ data = "nobody@x.test" })
    assert.outcome(r, "ERROR", "mailer.lua:3: pgq.mail.send: smtp://mail.test:25/: Failed sending data to the"
      .. " peer (RCPT failed: 550); the server said: 550 5.1.1 <nobody@x.test>: no such user")
    assert.is_not.mailed(r, "nobody@")
    assert.same({}, r.kept and r.sql or {})
    assert.truthy(r.mails[1].error)
  end)

  it("answers once with answer_mail_once, then accepts", function()
    consumer:answer_mail_once(nil, testing.mail_error("timeout"))
    local run = consumer:run({ { data = "a@x.test" }, { data = "b@x.test" } })
    assert.outcome(run[1], "ERROR", "mailer.lua:3: pgq.mail.send: smtp://mail.test:25/: Timeout was reached"
      .. " (after 30 seconds)")
    assert.outcome(run[2], "OK")
  end)

  it("lets a function look at the mail", function()
    local seen
    consumer:answer_mail("a@", function(m) seen = m.subject; return true end)
    assert.outcome(consumer:event({ data = "a@x.test" }), "OK")
    assert.equal("order 1", seen)
  end)

  it("raises without smtp_url, as the runtime does", function()
    local c = testing.load(path)
    assert.outcome(c:event({ data = "a@x.test" }), "ERROR",
      "mailer.lua:3: pgq.mail.send: no smtp_url in the config (smtp://host:port or smtps://...)")
  end)

  it("takes mail_answers in `pgqlua test` events files and prints each mail", function()
    local events = dir .. "/mailer.events.yaml"
    local f = assert(io.open(events, "w"))
    f:write([[
config: {smtp_url: "smtp://mail.test:25"}
mail_answers:
  - {match: "nobody@", error: "550 5.1.1 no such user"}
events:
  - {data: "ann@x.test", expect: OK}
  - {data: "nobody@x.test", expect: {outcome: ERROR, error_match: "RCPT failed: 550"}}
]])
    f:close()
    local o = {}
    local real = io.stdout
    -- luacheck: ignore 122
    io.stdout = { write = function(_, ...) for _, s in ipairs({ ... }) do o[#o + 1] = s end end }
    local ok, rc = pcall(cli_test.main, { path, events })
    io.stdout = real -- luacheck: ignore 122
    assert(ok, rc)
    local text = table.concat(o)
    assert.equal(0, rc, text)
    assert.truthy(text:find('    mail to ann@x.test, log@x.test "order 1" -> sent\n', 1, true))
    assert.truthy(text:find('    mail to nobody@x.test, log@x.test "order 2" -> error: Failed sending data to the'
      .. " peer (RCPT failed: 550); the server said: 550 5.1.1 no such user\n", 1, true))
  end)
end)
