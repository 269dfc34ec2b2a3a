// The lab node process's command line: defaults, every value typed, and one clear reason for
// what is wrong (an unknown flag included) instead of a stack trace.

import t from 'tap'
import { LabNodeUsageError, parseLabNodeArgs } from '../proxy/agent/lab-node-args.js'

const BASE = ['--mode', 'sk-assign', '--pin', '/run/l7proxy/x', '--policy', 'p.yaml']

t.test('defaults and typed values', async (t) => {
  const a = parseLabNodeArgs(BASE)
  t.match(a, { mode: 'sk-assign', pin: '/run/l7proxy/x', policy: 'p.yaml', policyDir: null, http: 'builtin', dns: 'builtin', httpPort: 15001, dnsPort: 15053, logLevel: 'info', dnsReject: 'REFUSED', dnsMinTtlSeconds: 3600, dnsMaxIps: 50, dnsMaxDelayMs: 100, metricsFd: null, state: null })
  t.ok(a.threads >= 1)
  t.equal(a.dnsThreads, 1, 'one DNS thread unless asked')
  const b = parseLabNodeArgs([...BASE, '--threads', '3', '--dns-threads', '2', '--dns', 'external', '--dns-max-delay', '250', '--metrics-fd', '3', '--dns-reject', 'NXDOMAIN', '--log-level', 'warn'])
  t.match(b, { threads: 3, dnsThreads: 2, dns: 'external', dnsMaxDelayMs: 250, metricsFd: 3, dnsReject: 'NXDOMAIN', logLevel: 'warn' })
})

t.test('what is wrong, said once', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--pin', 'x', '--policy', 'p'], /--mode is required/],
    [['--mode', 'dnat', '--policy', 'p'], /--pin is required/],
    [['--mode', 'dnat', '--pin', 'x'], /--policy or --policy-dir is required/],
    [[...BASE, '--threads', '0'], /--threads: expected an integer from 1 to 64, got '0'/],
    [[...BASE, '--threads', '2.5'], /--threads: expected an integer/],
    [[...BASE, '--dns-threads', '65'], /--dns-threads: expected an integer from 1 to 64, got '65'/],
    [[...BASE, '--http-port', '70000'], /--http-port: expected an integer from 1 to 65535/],
    [[...BASE, '--dns-max-delay', '0'], /--dns-max-delay: expected an integer from 1 to 10000/],
    [[...BASE, '--dns-reject', 'SERVFAIL'], /--dns-reject: expected REFUSED or NXDOMAIN, got 'SERVFAIL'/],
    [[...BASE, '--http', 'maybe'], /--http: expected builtin or external/],
    [[...BASE, '--log-level', 'loud'], /--log-level: no level 'loud'/],
    [[...BASE, '--metrics-fd', '1'], /--metrics-fd: expected an integer from 3/],
    [[...BASE, '--frobnicate'], /Unknown option '--frobnicate'/],
  ]
  for (const [argv, reason] of cases) t.throws(() => parseLabNodeArgs(argv), { constructor: LabNodeUsageError, message: reason }, argv.slice(-2).join(' '))
})
