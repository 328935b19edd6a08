--- pgqlua.mail - what pgq.mail.send does around the transport, shared by
-- the runtime (whose transport is runtime/lmail.c, libcurl's SMTP) and the
-- mock runner (whose transport answers from consumer:answer_mail): the
-- message's checks, its text as it goes to the server (headers, MIME
-- parts, encodings, CRLF line ends), the envelope, and the texts of
-- transport errors.
--
-- Like pgqlua.rules it runs inside a script's state and uses only library
-- functions captured when it loads.
local http = require "pgqlua.http"

local format, find, lower, match, gsub, byte, sub = string.format, string.find, string.lower,
  string.match, string.gsub, string.byte, string.sub
local type, ipairs, pairs, tostring, pcall = type, ipairs, pairs, tostring, pcall
local concat, sort = table.concat, table.sort
local os = { time = os.time, date = os.date, clock = os.clock }

local M = {}

local WHO = "pgq.mail.send"

--- Header names the fields set: a script's headers may not give them.
local RESERVED = { from = true, to = true, cc = true, bcc = true, subject = true, ["mime-version"] = true,
                   ["content-type"] = true, ["content-transfer-encoding"] = true }

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = byte(s, i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = {}
    for k = 3, 0, -1 do
      local v = (n >> (6 * k)) & 63
      q[#q + 1] = sub(B64, v + 1, v + 1)
    end
    if not b then q[3], q[4] = "=", "=" elseif not c then q[4] = "=" end
    out[#out + 1] = concat(q)
  end
  return concat(out)
end
M.base64 = base64

-- a header value with bytes beyond ASCII as RFC 2047 encoded words
local function encode_words(s)
  if not find(s, "[\128-\255]") then return s end
  -- encoded words of at most 45 bytes of text each, split between UTF-8
  -- characters
  local words, i = {}, 1
  while i <= #s do
    local j = i + 44
    if j < #s then
      while j > i and (byte(s, j + 1) or 0) >= 128 and (byte(s, j + 1) or 0) < 192 do j = j - 1 end
    end
    words[#words + 1] = "=?UTF-8?B?" .. base64(sub(s, i, j)) .. "?="
    i = j + 1
  end
  return concat(words, "\r\n ")
end
M.encode_words = encode_words

--- Quoted-printable (RFC 2045) of a text whose lines end in CRLF.
function M.quoted_printable(s)
  local out = {}
  for line, eol in s:gmatch("([^\r\n]*)(\r?\n?)") do
    if line == "" and eol == "" then break end
    local enc = gsub(line, "[^\33-\60\62-\126 \t]", function(c) return format("=%02X", byte(c)) end)
    enc = gsub(enc, "([ \t])$", function(c) return format("=%02X", byte(c)) end)
    -- soft line breaks: lines of at most 76 characters, never inside =XX
    while #enc > 76 do
      local cut = 75
      if sub(enc, cut - 1, cut - 1) == "=" then cut = cut - 2 elseif sub(enc, cut, cut) == "=" then cut = cut - 1 end
      out[#out + 1] = sub(enc, 1, cut) .. "=\r\n"
      enc = sub(enc, cut + 1)
    end
    out[#out + 1] = enc .. (eol ~= "" and "\r\n" or "")
  end
  return concat(out)
end

-- the body's lines end in CRLF; 7bit when it is ASCII in short lines,
-- else quoted-printable
local function body_part(text, force_qp)
  text = gsub(gsub(text, "\r\n", "\n"), "\r", "\n")
  text = gsub(text, "\n", "\r\n")
  local plain = not force_qp and not find(text, "[\128-\255%z]")
  if plain then
    for line in (text .. "\r\n"):gmatch("(.-)\r\n") do
      if #line > 998 then plain = false; break end
    end
  end
  if plain then return "7bit", text end
  return "quoted-printable", M.quoted_printable(text)
end

--- "Name <a@b>" or "a@b": the address alone, or nil.
function M.address(s)
  if type(s) ~= "string" or find(s, "[\r\n%z]") then return nil end
  local a = match(s, "<([^<>]*)>%s*$") or match(s, "^%s*(.-)%s*$")
  -- at most 254 characters (RFC 5321's path limit)
  if #a > 254 or not find(a, "^[^%s<>@,;\"]+@[^%s<>@,;\"]+$") then return nil end
  return a
end

-- "Name <a@b>" with the name encoded when it is not ASCII
local function address_header(s)
  local name, addr = match(s, "^%s*(.-)%s*<([^<>]*)>%s*$")
  if not name or name == "" then return M.address(s) end
  if find(name, "[\128-\255]") then return encode_words(name) .. " <" .. addr .. ">" end
  return name .. " <" .. addr .. ">"
end

-- to, cc, bcc: a string or a list of strings -> list (nil: empty)
local function address_list(v, field, required)
  if v == nil then
    if required then return nil, format("%s: %s is required (an address or a list of them)", WHO, field) end
    return {}
  end
  local list = type(v) == "string" and { v } or v
  if type(list) ~= "table" then
    return nil, format("%s: %s must be an address or a list of them, not %s", WHO, field, type(v))
  end
  local out = {}
  for i, a in ipairs(list) do
    if not M.address(a) then
      return nil, format("%s: %s: not a mail address: %s", WHO, field, type(a) == "string" and
        (gsub(a, "[%c]", "?")) or type(a))
    end
    out[i] = a
  end
  if required and #out == 0 then return nil, format("%s: %s is required (an address or a list of them)", WHO, field) end
  return out
end

local DAYS = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" }
local MONTHS = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" }

--- An RFC 5322 date in UTC (English names whatever the locale).
function M.date(t)
  local d = os.date("!*t", t or os.time())
  return format("%s, %02d %s %04d %02d:%02d:%02d +0000", DAYS[d.wday], d.day, MONTHS[d.month], d.year, d.hour,
    d.min, d.sec)
end

local serial = 0

-- a MIME boundary no quoted-printable text can hold ("=_" is never in it)
local function boundary()
  serial = serial + 1
  return format("=_pgqlua_%x_%x_%d", os.time(), (os.clock() * 1e6) // 1, serial)
end

--- msg (the script's table) to what the transport sends, or nil and the
-- error.  ctx: url (smtp_url without its secrets, nil when there is no
-- smtp_url) and timeout (http_timeout).  The result: from (the envelope
-- sender), rcpt (every recipient: to, cc, bcc), data (the message as sent,
-- CRLF line ends), timeout; and for reports to, cc, bcc (lists), subject,
-- text, html, headers (the script's).
function M.prepare(msg, ctx)
  if type(msg) ~= "table" then
    return nil, format("%s: expected a table {from =, to =, subject =, text = ...}, got %s", WHO, type(msg))
  end
  if not (ctx and ctx.url) then
    return nil, format("%s: no smtp_url in the config (smtp://host:port or smtps://...)", WHO)
  end
  local from = M.address(msg.from)
  if not from then
    return nil, format("%s: from must be a mail address (\"a@b\" or \"Name <a@b>\"), not %s", WHO,
      type(msg.from) == "string" and (gsub(msg.from, "[%c]", "?")) or type(msg.from))
  end
  local to, cc, bcc, err
  to, err = address_list(msg.to, "to", true)
  if not to then return nil, err end
  cc, err = address_list(msg.cc, "cc")
  if not cc then return nil, err end
  bcc, err = address_list(msg.bcc, "bcc")
  if not bcc then return nil, err end
  local subject = msg.subject
  if subject == nil then subject = "" end
  if type(subject) ~= "string" or find(subject, "[\r\n%z]") then
    return nil, format("%s: subject must be a string without line breaks", WHO)
  end
  for _, f in ipairs({ "text", "html" }) do
    if msg[f] ~= nil and type(msg[f]) ~= "string" then
      return nil, format("%s: %s must be a string, not %s", WHO, f, type(msg[f]))
    end
  end
  if msg.text == nil and msg.html == nil then
    return nil, format("%s: give text, html or both", WHO)
  end
  local timeout = msg.timeout
  if timeout == nil then timeout = ctx.timeout or 30 end
  if type(timeout) ~= "number" or not (timeout > 0 and timeout <= 3.2e9) then
    return nil, format("%s: timeout must be seconds above 0, not %s", WHO, tostring(timeout))
  end
  local extra, have = {}, {}
  if msg.headers ~= nil then
    if type(msg.headers) ~= "table" then
      return nil, format("%s: headers must be a table, not %s", WHO, type(msg.headers))
    end
    for name, value in pairs(msg.headers) do
      if type(name) ~= "string" or not find(name, "^[!#-'*+%-.0-9A-Z^-~]+$") then
        return nil, format("%s: bad header name %s", WHO, tostring(name))
      end
      if RESERVED[lower(name)] then
        return nil, format("%s: header %s is set from the message's fields", WHO, name)
      end
      if type(value) == "number" then value = tostring(value) end
      if type(value) ~= "string" or find(value, "[\r\n%z]") then
        return nil, format("%s: header %s must be a string without line breaks", WHO, name)
      end
      extra[#extra + 1] = name .. ": " .. encode_words(value)
      have[lower(name)] = true
    end
    sort(extra)
  end

  local head = {}
  if not have.date then head[#head + 1] = "Date: " .. M.date() end
  head[#head + 1] = "From: " .. address_header(msg.from)
  local shown = {}
  for i, a in ipairs(to) do shown[i] = address_header(a) end
  head[#head + 1] = "To: " .. concat(shown, ",\r\n ")
  if #cc > 0 then
    shown = {}
    for i, a in ipairs(cc) do shown[i] = address_header(a) end
    head[#head + 1] = "Cc: " .. concat(shown, ",\r\n ")
  end
  head[#head + 1] = "Subject: " .. encode_words(subject)
  for _, h in ipairs(extra) do head[#head + 1] = h end
  head[#head + 1] = "MIME-Version: 1.0"
  local body
  if msg.html == nil or msg.text == nil then
    local kind = msg.html and "html" or "plain"
    local cte, enc = body_part(msg.html or msg.text)
    head[#head + 1] = "Content-Type: text/" .. kind .. "; charset=utf-8"
    head[#head + 1] = "Content-Transfer-Encoding: " .. cte
    body = enc
  else
    local b = boundary()
    head[#head + 1] = "Content-Type: multipart/alternative; boundary=\"" .. b .. "\""
    local parts = {}
    for _, p in ipairs({ { "plain", msg.text }, { "html", msg.html } }) do
      local cte, enc = body_part(p[2], true)
      parts[#parts + 1] = "--" .. b .. "\r\nContent-Type: text/" .. p[1] .. "; charset=utf-8\r\n"
        .. "Content-Transfer-Encoding: " .. cte .. "\r\n\r\n" .. enc
      if sub(enc, -2) ~= "\r\n" then parts[#parts] = parts[#parts] .. "\r\n" end
    end
    body = concat(parts) .. "--" .. b .. "--\r\n"
  end
  if sub(body, -2) ~= "\r\n" then body = body .. "\r\n" end
  local rcpt = {}
  for _, list in ipairs({ to, cc, bcc }) do
    for _, a in ipairs(list) do rcpt[#rcpt + 1] = M.address(a) end
  end
  return {
    from = from, rcpt = rcpt, data = concat(head, "\r\n") .. "\r\n\r\n" .. body, timeout = timeout + 0.0,
    to = to, cc = cc, bcc = bcc, subject = subject, text = msg.text, html = msg.html, headers = msg.headers,
  }
end

--- smtp_url as messages show it, as lmail.c shows it: no user name,
-- password, query or fragment, and "/" for an empty path.
function M.safe_url(url)
  local u = http.safe_url(url)
  if find(u, "^%a[%w+.-]*://[^/]*$") then u = u .. "/" end
  return u
end

--- The error a failed send raises (after the script's file:line).
function M.transport_error(ctx, reason)
  return format("%s: %s: %s", WHO, ctx and ctx.url or "?", tostring(reason))
end

--- libcurl's reason for a mock error: a server's reply ("550 5.1.1 no
-- such user": a refused recipient, as runtime/lmail.c words it), or a
-- kind of pgqlua.http.ERRORS ("timeout", "connect", ...), or the reason.
function M.reason(kind, prep)
  kind = tostring(kind)
  local code = match(kind, "^([45]%d%d)[ -]")
  if code or match(kind, "^[45]%d%d$") then
    code = code or kind
    return format("Failed sending data to the peer (RCPT failed: %s); the server said: %s", code, kind)
  end
  if kind == "timeout" then
    return format("%s (after %.3g seconds)", http.ERRORS.timeout, prep and prep.timeout or 30)
  end
  return http.ERRORS[kind] or kind
end

--- One mail as reports show it: 'to a@b, c@d "Subject" -> sent' (or the error).
function M.text(m)
  local all = {}
  for _, list in ipairs({ m.to or {}, m.cc or {}, m.bcc or {} }) do
    for _, a in ipairs(list) do all[#all + 1] = M.address(a) or a end
  end
  return format("to %s %q -> %s", concat(all, ", "), m.subject or "", m.error and ("error: " .. m.error) or "sent")
end

--- Whether one of the mail's recipients (to, cc, bcc) matches `want` (a
-- substring or a Lua pattern; nil matches any).
function M.matches(m, want)
  if want == nil then return true end
  for _, list in ipairs({ m.to or {}, m.cc or {}, m.bcc or {} }) do
    for _, a in ipairs(list) do
      if find(a, want, 1, true) then return true end
      local ok, found = pcall(find, a, want)
      if ok and found then return true end
    end
  end
  return false
end

return M
