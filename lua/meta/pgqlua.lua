---@meta
-- LuaLS (lua-language-server) definitions of what pgqlua gives a consumer
-- script: the `pgq` table, the event `ev`, the `db` handle and the hooks.
-- Point your editor at this folder, e.g. in .luarc.json:
--   { "runtime.version": "Lua 5.4", "workspace.library": ["<pgqlua>/lua/meta"] }
-- Never loaded at run time.

---SQL NULL: a value distinct from nil (a present key), compared with `==`.
---@class pgq.null

---@alias pgq.result integer pgq.EVENT_OK | pgq.EVENT_RETRY | pgq.EVENT_FAILED | pgq.ABORT_BATCH

---@class pgq.log
---@field error fun(fmt: any, ...: any) into the runtime's log at level error, with your file:line
---@field warn fun(fmt: any, ...: any) level warn
---@field info fun(fmt: any, ...: any) level info
---@field debug fun(fmt: any, ...: any) level debug

---The table the runtime gives scripts as `pgq` (also `require "pgqlua"`).
---@class pgqlua
pgq = {}

---Done: the event's writes are kept.  Returning nothing means the same.
---@type integer
pgq.EVENT_OK = 1
---Into pgqlua.failed_event: `return pgq.EVENT_FAILED, "reason"`.
---@type integer
pgq.EVENT_FAILED = 2
---Back through PgQ's retry queue: `return pgq.EVENT_RETRY [, seconds]` (default retry_delay).
---@type integer
pgq.EVENT_RETRY = 3
---Roll back the whole batch; it is delivered again.
---@type integer
pgq.ABORT_BATCH = 4

---SQL NULL in events, rows and db:exec parameters.
---@type pgq.null
pgq.null = {}

---@type pgq.log
pgq.log = {}

---Decode a pgq.logutriga row: "a=1&b=x%20y&c" -> {a = "1", b = "x y", c = pgq.null}.
---@param s string
---@return table<string, string|pgq.null>
function pgq.urldecode(s) end

---Decode JSON (pgq.jsontriga rows): integers stay integers, null is pgq.null.
---@param s string
---@return any
function pgq.json_decode(s) end

---One PgQ event, as process_event gets it.  SQL NULL is pgq.null.
---An HTTP(S) request for pgq.http.request.
---@class pgq.http.req
---@field url string http:// or https://
---@field method? string default GET, or POST with a body
---@field headers? table<string, string|number>
---@field body? string the request body
---@field json? any a Lua value sent as JSON (pgq.null is null), with Content-Type: application/json
---@field timeout? number seconds, default http_timeout
---@field follow? boolean follow redirects (default: a 3xx is returned as it is)

---@class pgq.http.res
---@field status integer
---@field headers table<string, string> lower-case names
---@field body string

---@class pgq.http
pgq.http = {}

---One request, waited for.  Any status is a response; a transport failure
---(DNS, connect, TLS, timeout, reset, a body over http_max_body) raises
---"pgq.http.request: METHOD URL: reason".  An event's requests carry
---Idempotency-Key: <queue>/<consumer>/<ev.id> (see http_idempotency_key).
---@param req pgq.http.req
---@return pgq.http.res
function pgq.http.request(req) end

---The same request without waiting (up to http_concurrency in flight).  The
---event's result waits for the response: 2xx keeps it; 408, 429, 5xx and
---transport errors make it RETRY (Retry-After gives the delay); other
---statuses FAILED with the status and the body's first bytes.  An event
---whose send ends not OK has its database writes undone.  on_response(res)
---may return a result (as process_event does) to decide instead; res.error
---is set for a transport error.
---@param req pgq.http.req
---@param on_response? fun(res: pgq.http.res): integer?, (number|string)?
function pgq.http.send(req, on_response) end

---A mail for pgq.mail.send.
---@class pgq.mail.msg
---@field from string "a@b" or "Name <a@b>"
---@field to string|string[] one address or a list
---@field cc? string|string[]
---@field bcc? string|string[] recipients not shown in the headers
---@field subject? string
---@field text? string the plain text (text, html or both)
---@field html? string the HTML part (with text: multipart/alternative)
---@field headers? table<string, string|number> more headers (Reply-To, Message-ID, ...)
---@field timeout? number seconds, default http_timeout

---@class pgq.mail
pgq.mail = {}

---One mail through the config's smtp_url, waited for.  A refused sender or
---recipient, a refused login or a transport failure raises
---"pgq.mail.send: URL: reason; the server said: 550 ..." (the URL without
---its login).  A mail cannot be taken back: an event retried after its mail
---went out sends it again.
---@param msg pgq.mail.msg
---@return true
function pgq.mail.send(msg) end

---@class pgq.event
---@field id integer ev_id, unique within the queue
---@field txid integer the producer's transaction id
---@field retry integer 0 on first delivery, then 1, 2, ...
---@field time string when it was inserted, e.g. "2024-01-02 03:04:05.123+00"
---@field type string|pgq.null ev_type: "I:id" (logutriga), JSON (jsontriga) or the producer's type
---@field data string|pgq.null ev_data: the row (urlencoded or JSON) or the producer's text
---@field extra1 string|pgq.null ev_extra1: the table for trigger events
---@field extra2 string|pgq.null
---@field extra3 string|pgq.null
---@field extra4 string|pgq.null

---The batch table on_batch_start / on_batch_end get.
---@class pgq.batch
---@field id integer
---@field tick_id integer
---@field prev_tick_id integer
---@field tick_time string
---@field prev_tick_time string

---What init(config) gets.
---@class pgq.config
---@field queue_name string
---@field consumer_name string
---@field script string
---@field config_file string
---@field retry_delay number
---@field max_retries integer
---@field fetch_size integer
---@field loop_delay number

---A row of db:exec: integer, float and boolean columns are Lua numbers and
---booleans, NULL is pgq.null, everything else (numeric too) a string.
---@alias pgq.row table<string, string|number|boolean|pgq.null>

---The database handle: the batch's transaction.
---@class pgq.db
local db = {}

---Run one statement with $1-style parameters (nil and pgq.null are NULL;
---numbers and booleans are sent as text).  Raises on an SQL error.
---@param sql string
---@param ... string|number|boolean|pgq.null|nil
---@return pgq.row[] rows
---@return integer count rows returned or affected
function db:exec(sql, ...) end

---Queue a write without waiting for it (pipelined); returns nothing.  An
---SQL error shows later: the event's writes are undone and the event is an
---error ("db:send: ..."), or the event's next db:exec raises it.  For
---writes whose result the script does not need: many events' sends share
---one round trip.
---@param sql string
---@param ... string|number|boolean|pgq.null|nil
function db:send(sql, ...) end

---Required: called once per event.
---@param ev pgq.event
---@param db pgq.db
---@return integer? result pgq.EVENT_OK (or nothing), pgq.EVENT_RETRY, pgq.EVENT_FAILED or pgq.ABORT_BATCH
---@return (number|string)? detail RETRY: seconds; FAILED: the reason
function process_event(ev, db) end

---Optional: once after the script is loaded (and after a reload).
---@param config pgq.config
function init(config) end

---Optional: before each batch's events.
---@param batch pgq.batch
---@param db pgq.db
function on_batch_start(batch, db) end

---Optional: after each batch's events.
---@param batch pgq.batch
---@param db pgq.db
function on_batch_end(batch, db) end
