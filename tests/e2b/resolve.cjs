// Preload (node --require) for the HTTPS run of the E2B SDK suite: names
// under HEARTH_TEST_DOMAIN (the domain itself, api.<domain>,
// <port>-<id>.<domain>) resolve to HEARTH_TEST_IP, a loopback address where
// hearth listens on port 443, as public DNS would point them at a server.
// Every other name resolves as usual. Node's fetch (undici) and the http,
// https and net modules all look names up through dns.lookup.
'use strict'
const dns = require('node:dns')

const domain = (process.env.HEARTH_TEST_DOMAIN || '').toLowerCase()
const ip = process.env.HEARTH_TEST_IP || ''
if (!domain || !/^127\.\d+\.\d+\.\d+$/.test(ip)) {
  throw new Error('resolve.cjs: set HEARTH_TEST_DOMAIN and a loopback HEARTH_TEST_IP')
}

const covered = (host) => {
  const h = String(host).toLowerCase().replace(/\.$/, '')
  return h === domain || h.endsWith('.' + domain)
}

const original = dns.lookup
dns.lookup = function lookup(host, options, callback) {
  if (typeof options === 'function') {
    callback = options
    options = {}
  }
  if (!covered(host)) return original.call(dns, host, options, callback)
  const opts = typeof options === 'number' ? { family: options } : options || {}
  if (opts.family === 6) {
    process.nextTick(callback, Object.assign(new Error(`no IPv6 for ${host}`), { code: 'ENOTFOUND' }))
    return
  }
  if (opts.all) process.nextTick(callback, null, [{ address: ip, family: 4 }])
  else process.nextTick(callback, null, ip, 4)
}

const originalPromise = dns.promises.lookup
dns.promises.lookup = async function lookup(host, options) {
  if (!covered(host)) return originalPromise.call(dns.promises, host, options)
  const opts = typeof options === 'number' ? { family: options } : options || {}
  return opts.all ? [{ address: ip, family: 4 }] : { address: ip, family: 4 }
}
