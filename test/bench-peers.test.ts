// The benchmarks' peers, without starting them: HAProxy's and dnsdist's configurations say what
// the comparison relies on (transparent listener, the same rules, HTTP/2 for gRPC, statistics),
// and HAProxy's request count is read from its `show stat` CSV.

import t from 'tap'
import { dnsdistConfig } from '../bench/peers/dnsdist.js'
import { frontendRequests, haproxyConfig } from '../bench/peers/haproxy.js'

t.test('HAProxy: transparent, the same rules, h2 for gRPC, a stats socket when asked', async (t) => {
  const h1 = haproxyConfig({ rules: [{ method: 'GET', path: '/v1/.*' }], listen: '127.0.0.1', port: 15001, threads: 2 })
  t.match(h1, /^ {2}bind 127\.0\.0\.1:15001 transparent$/m)
  t.match(
    h1,
    /^ {2}http-request allow if \{ method -m reg \^\(\?:GET\)\$ \} \{ pathq -m reg \^\(\?:\/v1\/\.\*\)\$ \}\n {2}http-request deny deny_status 403$/m,
    'allow rules, then deny the rest',
  )
  t.notMatch(h1, /proto h2|stats socket/)
  const h2 = haproxyConfig({
    rules: [],
    listen: '127.0.0.1',
    port: 15001,
    threads: 2,
    h2: true,
    statsSocket: '/tmp/x/haproxy.sock',
  })
  t.match(h2, /bind 127\.0\.0\.1:15001 transparent proto h2\n/)
  t.match(h2, /server original 0\.0\.0\.0:0 proto h2\n/)
  t.match(h2, /^ {2}stats socket \/tmp\/x\/haproxy\.sock mode 600 level user$/m)
})

t.test("HAProxy's request count is the steered frontend's req_tot", async (t) => {
  // The columns as HAProxy 2.6 prints them, up to req_tot (the 49th).
  const cols =
    '# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt'
  const row = (px: string, sv: string, req: number): string =>
    [px, sv, ...Array(46).fill('0'), String(req), '0'].join(',')
  const csv = [
    cols,
    row('steered', 'FRONTEND', 12345),
    row('original_destination', 'original', 7),
    row('original_destination', 'BACKEND', 99),
    '',
  ].join('\n')
  t.equal(frontendRequests(csv), 12345)
  t.throws(
    () => frontendRequests(`${cols}\n`),
    /no req_tot for frontend 'steered'/,
    'no frontend row is an error, not zero',
  )
  t.throws(() => frontendRequests('Unknown command\n'), /no req_tot/)
})

t.test('dnsdist: listens where steered, refuses outside empire, statistics on loopback when asked', async (t) => {
  const plain = dnsdistConfig({ listen: '198.18.0.1', port: 15053, server: '198.18.0.30:53' })
  t.match(plain, /^setLocal\('198\.18\.0\.1:15053'\)$/m)
  t.match(plain, /^newServer\(\{ address = '198\.18\.0\.30:53' \}\)$/m)
  t.match(plain, /NotRule\(SuffixMatchNodeRule\(empire, true\)\), RCodeAction\(DNSRCode\.REFUSED\)/)
  t.notMatch(plain, /webserver/)
  t.match(
    dnsdistConfig({ listen: '198.18.0.1', port: 15053, server: '198.18.0.30:53', statsPort: 15054 }),
    /^webserver\('127\.0\.0\.1:15054'\)$/m,
  )
})
