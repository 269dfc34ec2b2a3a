// What a person at a terminal reads: one line per log record, time and level first, the fields
// after the message.

import t from 'tap'
import { terminalLines } from '../proxy/agent/log-format.js'

t.test('JSON lines become one readable line each', async (t) => {
  const text =
    JSON.stringify({
      level: 30,
      time: 0,
      source: '198.18.1.10:4000',
      verdict: 'denied',
      path: '/v1/exhaust-port',
      msg: 'http denied',
    }) +
    '\n' +
    JSON.stringify({
      level: 50,
      time: 0,
      file: 'bad.yaml',
      msg: 'policy file refused; the previous policy stays in force',
    }) +
    '\n'
  const out = terminalLines(false)(text).split('\n').filter(Boolean)
  t.equal(out.length, 2, 'one line per record')
  t.match(out[0], /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: http denied \{.*"verdict":"denied".*"path":"\/v1\/exhaust-port"/)
  t.match(
    out[1],
    /^\[\d\d:\d\d:\d\d\.\d{3}\] ERROR: policy file refused; the previous policy stays in force \{"file":"bad.yaml"\}/,
  )
  t.notMatch(terminalLines(true)(text), /^\{/, 'colored too, never raw JSON')
})
