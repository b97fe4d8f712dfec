// The egress-rules scenario's "internet" server (run.sh starts it in a
// network namespace of its own): HTTPS on ADDR:443 with CERT and KEY,
// answering every request with the headers it received, as JSON.
//
//   node egress-upstream.mjs ADDR CERT KEY
import { createServer } from 'node:https'
import { readFileSync } from 'node:fs'

const [addr, cert, key] = process.argv.slice(2)
createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
  res.setHeader('Content-Type', 'application/json')
  res.end(JSON.stringify(req.headers))
}).listen(443, addr, () => console.log(`egress upstream on ${addr}:443`))
