// E2B conformance: the official `e2b` SDK (pinned in package-lock.json),
// unmodified, against a hearth server. Run by tests/e2b/run.sh, which starts
// `hearth dev` and exports E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
//
// Scenarios follow issue 5. Each test creates what it needs; sandboxes are
// killed in `after` even when a test fails.
import { after, before, describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { eventually } from './helpers.mjs'
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import {
  ALL_TRAFFIC,
  AuthenticationError,
  CommandExitError,
  FilesystemEventType,
  NotFoundError,
  Sandbox,
  Secret,
  SecretNotFoundError,
  Volume,
  VolumeFileType,
  VolumeNotFoundError,
  VolumePathNotFoundError,
} from 'e2b'

for (const v of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_VOLUME_API_URL', 'E2B_API_KEY']) {
  if (!process.env[v]) throw new Error(`${v} is not set: run tests/e2b/run.sh`)
}

const TEMPLATE = process.env.E2B_TEMPLATE || 'base'
const RUN_ID = randomUUID() // metadata tag of this run's sandboxes
const T = { timeout: 180_000 } // per test: VMs may boot under TCG
const created = new Set()

async function create(opts = {}, template = TEMPLATE) {
  const sbx = await Sandbox.create(template, {
    timeoutMs: 600_000,
    ...opts,
    metadata: { suite: 'conformance', run: RUN_ID, ...(opts.metadata ?? {}) },
  })
  created.add(sbx.sandboxId)
  return sbx
}

async function kill(sbx) {
  created.delete(sbx.sandboxId)
  await sbx.kill()
}

after(async () => {
  await Promise.allSettled([...created].map((id) => Sandbox.kill(id)))
})

// pauseOrSkip pauses sbx; when the server cannot pause on this host (501),
// it skips the calling test with the server's reason.
async function pauseOrSkip(t, sbx) {
  try {
    return await sbx.pause()
  } catch (err) {
    if (err?.statusCode === 501 || /^501:/.test(err?.message ?? '')) {
      t.skip(`pause is not implemented on this host: ${err.message}`)
      return null
    }
    throw err
  }
}

describe('sandbox with commands and files', () => {
  let sbx
  before(async () => {
    sbx = await create({ envs: { SANDBOX_VAR: 'from-create' } })
  }, T)
  after(async () => sbx && kill(sbx))

  test('create from base reports what the SDK needs', T, async () => {
    assert.match(sbx.sandboxId, /^[a-z0-9]+$/)
    assert.ok(await sbx.isRunning())
  })

  test('commands.run: stdout, stderr, exit code', T, async () => {
    const r = await sbx.commands.run('echo out; echo err >&2')
    assert.equal(r.stdout, 'out\n')
    assert.equal(r.stderr, 'err\n')
    assert.equal(r.exitCode, 0)
  })

  test('commands.run: env vars (per command and from create) and cwd', T, async () => {
    const r = await sbx.commands.run('echo "$FOO $SANDBOX_VAR"; pwd', { envs: { FOO: 'bar' }, cwd: '/tmp' })
    assert.equal(r.stdout, 'bar from-create\n/tmp\n')
  })

  test('commands.run: non-zero exit raises CommandExitError', T, async () => {
    await assert.rejects(sbx.commands.run('echo bad >&2; exit 3'), (err) => {
      assert.ok(err instanceof CommandExitError, `got ${err?.name}: ${err?.message}`)
      assert.equal(err.exitCode, 3)
      assert.equal(err.stderr, 'bad\n')
      return true
    })
  })

  test('background command killed by pid', T, async () => {
    const h = await sbx.commands.run('sleep 600', { background: true })
    assert.ok(h.pid > 0)
    assert.ok((await sbx.commands.list()).some((p) => p.pid === h.pid))
    assert.equal(await sbx.commands.kill(h.pid), true)
    await assert.rejects(h.wait(), CommandExitError)
    assert.ok(!(await sbx.commands.list()).some((p) => p.pid === h.pid))
  })

  test('stdin', T, async () => {
    const h = await sbx.commands.run('cat', { background: true, stdin: true })
    await sbx.commands.sendStdin(h.pid, 'hello stdin\n')
    await sbx.commands.closeStdin(h.pid)
    const r = await h.wait()
    assert.equal(r.stdout, 'hello stdin\n')
  })

  test('files: write/read text and bytes, list, makeDir, rename, remove, exists', T, async () => {
    const dir = `/tmp/conf-${Date.now()}`
    assert.equal(await sbx.files.makeDir(dir), true)
    assert.equal(await sbx.files.makeDir(dir), false)
    await sbx.files.write(`${dir}/a.txt`, 'hello files')
    assert.equal(await sbx.files.read(`${dir}/a.txt`), 'hello files')

    const bytes = new Uint8Array(4096).map((_, i) => (i * 7) % 256)
    await sbx.files.write(`${dir}/b.bin`, bytes.buffer)
    const back = await sbx.files.read(`${dir}/b.bin`, { format: 'bytes' })
    assert.deepEqual(Buffer.from(back), Buffer.from(bytes))

    const names = (await sbx.files.list(dir)).map((e) => e.name).sort()
    assert.deepEqual(names, ['a.txt', 'b.bin'])

    await sbx.files.rename(`${dir}/a.txt`, `${dir}/c.txt`)
    assert.equal(await sbx.files.exists(`${dir}/a.txt`), false)
    assert.equal(await sbx.files.read(`${dir}/c.txt`), 'hello files')
    await sbx.files.remove(`${dir}/c.txt`)
    assert.equal(await sbx.files.exists(`${dir}/c.txt`), false)
    assert.equal(await sbx.files.exists(`${dir}/b.bin`), true)
  })

  test('signed file URLs: uploadUrl, downloadUrl with and without an expiry, an expired one refused', T, async (t) => {
    if (!sbx.envdAccessToken) {
      t.skip('the sandbox is not secured: the SDK signs no URLs')
      return
    }
    const path = `/tmp/signed-${Date.now()}.txt`
    // E2B_SANDBOX_URL routes by header in this run, as the SDK's own calls do.
    const headers = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' }
    let r = await fetch(await sbx.uploadUrl(path), {
      method: 'POST', headers: { ...headers, 'Content-Type': 'application/octet-stream' }, body: 'signed upload',
    })
    assert.equal(r.status, 200, await r.text())
    for (const opts of [{}, { useSignatureExpiration: 60 }]) {
      r = await fetch(await sbx.downloadUrl(path, opts), { headers })
      assert.equal(r.status, 200, JSON.stringify(opts))
      assert.equal(await r.text(), 'signed upload')
    }
    // Correctly signed, but expired ten seconds ago; and a valid one whose
    // expiration was moved later (the signature covers it).
    r = await fetch(await sbx.downloadUrl(path, { useSignatureExpiration: -10 }), { headers })
    assert.equal(r.status, 401, 'expired URL')
    const moved = new URL(await sbx.downloadUrl(path, { useSignatureExpiration: 60 }))
    moved.searchParams.set('signature_expiration', String(Math.floor(Date.now() / 1000) + 3600))
    r = await fetch(moved, { headers })
    assert.equal(r.status, 401, 'expiration moved')
  })

  test('files.watchDir sees a new file', T, async () => {
    const dir = `/tmp/watch-${Date.now()}`
    await sbx.files.makeDir(dir)
    const events = []
    const w = await sbx.files.watchDir(dir, (e) => events.push(e))
    try {
      await sbx.files.write(`${dir}/new.txt`, 'x')
      await eventually(() => events.some((e) => e.name === 'new.txt' &&
        (e.type === FilesystemEventType.CREATE || e.type === FilesystemEventType.WRITE)), 'a watch event for new.txt')
    } finally {
      await w.stop()
    }
  })

  test('setTimeout and getInfo', T, async () => {
    await sbx.setTimeout(1_200_000)
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.equal(info.state, 'running')
    assert.equal(info.metadata.run, RUN_ID)
    assert.ok(info.templateId)
    const left = info.endAt.getTime() - Date.now()
    assert.ok(left > 1_100_000 && left <= 1_210_000, `endAt is ${left} ms away, want ~1200 s`)
  })

  test('Sandbox.list with a metadata filter', T, async () => {
    const other = await create({ metadata: { role: 'other' } })
    const pages = Sandbox.list({ query: { metadata: { run: RUN_ID, role: 'other' } } })
    const found = []
    while (pages.hasNext) found.push(...(await pages.nextItems()))
    assert.deepEqual(found.map((s) => s.sandboxId), [other.sandboxId])
    assert.equal(found[0].state, 'running')
    const mine = Sandbox.list({ query: { metadata: { run: RUN_ID } }, limit: 1 })
    const ids = []
    while (mine.hasNext) ids.push(...(await mine.nextItems()).map((s) => s.sandboxId))
    assert.ok(ids.includes(sbx.sandboxId) && ids.includes(other.sandboxId), `paged list: ${ids}`)
    await kill(other)
  })

  test('a web server in the sandbox is reachable through the proxy', T, async (t) => {
    const has = await sbx.commands.run('command -v python3 || true')
    if (!has.stdout.trim()) return t.skip('python3 is not in the template')
    await sbx.files.write('/tmp/www/index.html', 'hello from port 8000')
    const h = await sbx.commands.run('python3 -m http.server 8000', { background: true, cwd: '/tmp/www' })
    try {
      const body = await eventually(async () => {
        const res = await fetch(`${process.env.E2B_SANDBOX_URL}/index.html`, {
          headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '8000' },
        })
        return res.ok ? res.text() : null
      }, 'the guest web server answering', 100, 200)
      assert.equal(body, 'hello from port 8000')
      assert.equal(sbx.getHost(8000), `8000-${sbx.sandboxId}.${sbx.sandboxDomain}`)
    } finally {
      await h.kill()
    }
  })
})

test('pause, then Sandbox.connect resumes with memory and files intact', T, async (t) => {
  const sbx = await create()
  try {
    await sbx.files.write('/tmp/kept.txt', 'still here')
    const bg = await sbx.commands.run('sleep 3600', { background: true })
    const paused = await pauseOrSkip(t, sbx)
    if (paused === null) return
    assert.equal(paused, true)
    assert.equal(await sbx.pause().catch((e) => e), false, 'pausing a paused sandbox reports false (409)')
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
    const again = await Sandbox.connect(sbx.sandboxId)
    assert.equal((await again.getInfo()).state, 'running')
    assert.ok((await again.commands.list()).some((p) => p.pid === bg.pid), 'the background process survived')
    assert.equal(await again.files.read('/tmp/kept.txt'), 'still here')
  } finally {
    await kill(sbx)
  }
})

// The SDK keeps its connections to hearth alive, and hearth keeps its
// connections to the guest alive. A pause and resume gives the sandbox a new
// network namespace (here also a new address: another sandbox takes the freed
// one in between); the same Sandbox object must keep working, after E2B's
// and hearth's own (/v1) pause and resume alike.
test('kept-alive connections keep working after pause and resume (E2B and /v1)', T, async (t) => {
  const sbx = await create()
  const others = []
  try {
    assert.equal((await sbx.commands.run('echo one')).stdout, 'one\n')
    const paused = await pauseOrSkip(t, sbx)
    if (paused === null) return
    others.push(await create())
    await Sandbox.connect(sbx.sandboxId)
    assert.equal((await sbx.commands.run('echo two')).stdout, 'two\n')
    assert.equal(await sbx.files.read('/proc/sys/kernel/hostname').then(() => 'ok'), 'ok')

    const v1 = (path) => fetch(`${process.env.E2B_API_URL}/v1/sandboxes/${sbx.sandboxId}/${path}`, {
      method: 'POST', headers: { 'X-API-Key': process.env.E2B_API_KEY },
    })
    assert.equal((await v1('pause')).status, 200)
    others.push(await create())
    assert.equal((await v1('resume')).status, 200)
    assert.equal((await sbx.commands.run('echo three')).stdout, 'three\n')
  } finally {
    await Promise.allSettled([sbx, ...others].map((s) => kill(s)))
  }
})

test('network options: allowOut/denyOut at create, getInfo, updateNetwork, malformed rules', T, async () => {
  const sbx = await create({ network: { allowOut: ['1.1.1.1'], denyOut: [ALL_TRAFFIC] } })
  try {
    let info = await sbx.getInfo()
    assert.deepEqual(info.network?.allowOut, ['1.1.1.1/32'])
    assert.deepEqual(info.network?.denyOut, ['0.0.0.0/0'])
    assert.equal(info.allowInternetAccess, true)

    await sbx.updateNetwork({ allowInternetAccess: false, allowOut: ['8.8.8.0/24'] })
    info = await sbx.getInfo()
    assert.equal(info.allowInternetAccess, false)
    assert.deepEqual(info.network?.allowOut, ['8.8.8.0/24'])
    assert.equal(info.network?.denyOut, undefined, 'updateNetwork replaces the whole configuration')
    // The sandbox keeps working under the new rules.
    assert.equal((await sbx.commands.run('echo ok')).stdout.trim(), 'ok')

    await sbx.updateNetwork({})
    info = await sbx.getInfo()
    assert.equal(info.allowInternetAccess, true)
    assert.equal(info.network, undefined)

    const namesRule = (rule) => (err) => {
      assert.match(err.message, /^400: /)
      assert.ok(err.message.includes(`"${rule}"`), `error names the rule: ${err.message}`)
      return true
    }
    await assert.rejects(sbx.updateNetwork({ denyOut: ['10.0.0.1/8'] }), namesRule('10.0.0.1/8'))
    await assert.rejects(sbx.updateNetwork({ allowOut: ['example.com'] }), namesRule('example.com'))
    await assert.rejects(Sandbox.create(TEMPLATE, { network: { allowOut: ['*.example.com'] } }), namesRule('*.example.com'))
    await assert.rejects(Sandbox.updateNetwork('nosuchsandbox', {}), NotFoundError)
  } finally {
    await kill(sbx)
  }
})

test('kill, then operations raise NotFoundError', T, async () => {
  const sbx = await create()
  await kill(sbx)
  const isNotFound = (err) => {
    assert.ok(err instanceof NotFoundError, `got ${err?.name}: ${err?.message}`)
    return true
  }
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId), isNotFound)
  await assert.rejects(sbx.setTimeout(60_000), isNotFound)
  await assert.rejects(Sandbox.connect(sbx.sandboxId), isNotFound)
  await assert.rejects(sbx.commands.run('echo hi'), isNotFound)
  await assert.rejects(sbx.files.read('/etc/hostname'), isNotFound)
  assert.equal(await Sandbox.kill(sbx.sandboxId), false)
  assert.equal(await sbx.isRunning(), false)
})

test('a wrong API key raises AuthenticationError', T, async () => {
  const apiKey = 'e2b_' + '0'.repeat(40)
  await assert.rejects(Sandbox.create(TEMPLATE, { apiKey }), AuthenticationError)
  await assert.rejects(Sandbox.list({ apiKey }).nextItems(), AuthenticationError)
})

test('latency: Sandbox.create + commands.run("echo hi"), p50 over 5', T, async () => {
  const N = 5
  const ms = []
  for (let i = 0; i < N; i++) {
    const t0 = performance.now()
    const sbx = await create()
    const r = await sbx.commands.run('echo hi')
    ms.push(performance.now() - t0)
    assert.equal(r.stdout, 'hi\n')
    await kill(sbx)
  }
  ms.sort((a, b) => a - b)
  const p50 = ms[Math.floor(N / 2)]
  console.log(`LATENCY create+run p50=${p50.toFixed(0)}ms over N=${N} (all: ${ms.map((x) => x.toFixed(0)).join(', ')} ms)`)
})

// A process that holds a value only in memory, counts in /tmp/count, and
// writes the value to /tmp/secret on SIGUSR1: a copy of it that answers
// proves the memory (not just the disk) was captured.
async function startMemoryHolder(sbx, value) {
  const script = `v=${value}; i=0; echo $$ > /tmp/holder.pid
trap 'echo $v > /tmp/secret' USR1
while :; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done
`
  await sbx.files.write('/tmp/holder.sh', script)
  await sbx.commands.run('exec sh /tmp/holder.sh', { background: true })
  await eventually(async () => (await count(sbx)) > 0, 'counter started')
  // The value lives only in the shell's memory from here on.
  await sbx.files.write('/tmp/holder.sh', '')
}

async function memoryValue(sbx) {
  await sbx.commands.run('rm -f /tmp/secret; kill -USR1 $(cat /tmp/holder.pid)')
  return eventually(async () => (await sbx.files.read('/tmp/secret')).trim(), 'the holder answering USR1')
}

async function count(sbx) {
  return Number((await sbx.files.read('/tmp/count')).trim())
}

describe('snapshots', () => {
  test('createSnapshot keeps the source running; Sandbox.create(snapshotId) starts from its memory', T, async () => {
    const sbx = await create()
    try {
      await startMemoryHolder(sbx, 'in-memory-42')
      const infoBefore = await sbx.getInfo()
      const snap = await sbx.createSnapshot({ name: `snap-${RUN_ID.slice(0, 8)}` })
      assert.ok(snap.snapshotId)
      assert.deepEqual(snap.names, [`snap-${RUN_ID.slice(0, 8)}`])

      // The source keeps its ID, state, end time and counting process.
      const infoAfter = await sbx.getInfo()
      assert.equal(infoAfter.state, 'running')
      assert.equal(infoAfter.endAt.getTime(), infoBefore.endAt.getTime())
      const c1 = await count(sbx)
      await eventually(async () => (await count(sbx)) > c1, 'source still counting')

      const listed = await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems()
      assert.deepEqual(listed.map((s) => s.snapshotId), [snap.snapshotId])
      const mine = await sbx.listSnapshots().nextItems()
      assert.deepEqual(mine.map((s) => s.snapshotId), [snap.snapshotId])

      const child = await create({}, snap.snapshotId)
      try {
        assert.equal(await memoryValue(child), 'in-memory-42')
        const c2 = await count(child)
        await eventually(async () => (await count(child)) > c2, 'child counting')
      } finally {
        await kill(child)
      }
      assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), true)
      assert.equal(await Sandbox.deleteSnapshot(snap.snapshotId), false)
    } finally {
      await kill(sbx)
    }
  })

  test('listSnapshots pages with nextToken; an unknown sandbox is SandboxNotFoundError', T, async () => {
    const sbx = await create()
    try {
      const a = await sbx.createSnapshot()
      const b = await sbx.createSnapshot()
      const p = Sandbox.listSnapshots({ sandboxId: sbx.sandboxId, limit: 1 })
      const seen = []
      while (p.hasNext) seen.push(...(await p.nextItems()))
      assert.deepEqual(seen.map((s) => s.snapshotId).sort(), [a.snapshotId, b.snapshotId].sort())
      for (const s of seen) assert.equal(await Sandbox.deleteSnapshot(s.snapshotId), true)
    } finally {
      await kill(sbx)
    }
    await assert.rejects(Sandbox.createSnapshot('nosuchsandbox'), NotFoundError)
  })
})

// hostLogged reads a figure the host logged for a sandbox (the last line
// holding marker and the sandbox's ID, field=N) from the server log run.sh
// names; null when there is none.
function hostLogged(sandboxId, marker, field) {
  const path = process.env.HEARTH_SERVER_LOG
  if (!path) return null
  const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.includes(marker) && l.includes(sandboxId))
  const m = lines.at(-1)?.match(new RegExp(`[ "]${field}["=:]+(\\d+)`))
  return m ? Number(m[1]) : null
}

describe('fork', () => {
  test('fork({count: 3}): each fork has the memory, they diverge, the source keeps counting', T, async () => {
    const sbx = await create()
    try {
      await startMemoryHolder(sbx, 'fork-me')
      const endAt = (await sbx.getInfo()).endAt.getTime()
      // While the fork runs, envd's /health is probed back to back through
      // the proxy: the longest probe bounds how long the source stood still.
      let forking = true
      let longestProbe = 0
      const probes = (async () => {
        while (forking) {
          const p0 = performance.now()
          await sbx.isRunning()
          longestProbe = Math.max(longestProbe, performance.now() - p0)
        }
      })()
      const t0 = performance.now()
      const forks = await sbx.fork({ count: 3, timeoutMs: 600_000 }).finally(() => { forking = false })
      const forkMs = performance.now() - t0
      await probes
      assert.equal(forks.length, 3)
      for (const f of forks) {
        assert.ok(f instanceof Sandbox, `fork failed: ${f?.message}`)
        created.add(f.sandboxId)
      }
      assert.equal(new Set(forks.map((f) => f.sandboxId)).size, 3)
      try {
        for (const [i, f] of forks.entries()) {
          assert.equal(await memoryValue(f), 'fork-me')
          await f.files.write('/tmp/who', `fork-${i}`)
        }
        for (const [i, f] of forks.entries()) assert.equal(await f.files.read('/tmp/who'), `fork-${i}`)
        assert.equal(await sbx.files.exists('/tmp/who'), false, 'the source does not see a fork\'s writes')
        assert.equal((await sbx.getInfo()).endAt.getTime(), endAt)
        const c = await count(sbx)
        await eventually(async () => (await count(sbx)) > c, 'source still counting')

        const t1 = performance.now()
        const cold = await create()
        const coldMs = performance.now() - t1
        await kill(cold)
        console.log(`FORK count=3 ${forkMs.toFixed(0)}ms vs one cold create ${coldMs.toFixed(0)}ms: ratio ${(forkMs / coldMs).toFixed(2)}`)

        // The same source paused once (and resumed: the same Sandbox object
        // then still works, through its kept-alive connections).
        const t2 = performance.now()
        assert.equal(await sbx.pause(), true)
        const pauseMs = performance.now() - t2
        await Sandbox.connect(sbx.sandboxId)
        assert.equal((await sbx.commands.run('echo back')).stdout, 'back\n')
        const stood = hostLogged(sbx.sandboxId, 'source captured', 'standstill_ms')
        const paused = hostLogged(sbx.sandboxId, 'msg=paused component=agent', 'ms')
        console.log(`FORK source standstill: longest /health probe during the fork ${longestProbe.toFixed(0)}ms` +
          ` vs one plain pause (sbx.pause()) ${pauseMs.toFixed(0)}ms: ratio ${(longestProbe / pauseMs).toFixed(2)}` +
          (stood === null || paused === null ? '' : `; host-measured ${stood}ms vs ${paused}ms: ratio ${(stood / paused).toFixed(2)}`))
        // The capture template goes with the last fork (the source is not
        // one of its sandboxes).
        assert.equal((await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems()).length, 1)
        for (const f of forks) await kill(f)
        assert.deepEqual(await Sandbox.listSnapshots({ sandboxId: sbx.sandboxId }).nextItems(), [],
          'the fork template is deleted with its last fork')
      } finally {
        await Promise.allSettled(forks.filter((f) => created.has(f.sandboxId)).map((f) => kill(f)))
      }
    } finally {
      await kill(sbx)
    }
  })

  test('fork count 0 and 101 are 400; an unknown sandbox is SandboxNotFoundError', T, async () => {
    const sbx = await create()
    try {
      for (const count of [0, 101]) {
        await assert.rejects(sbx.fork({ count }), (err) => {
          assert.match(err.message, /^400: count/)
          return true
        })
      }
    } finally {
      await kill(sbx)
    }
    await assert.rejects(Sandbox.fork('nosuchsandbox', { count: 1 }), NotFoundError)
  })
})

describe('secrets', () => {
  test('Secret.create/getInfo/update/list/exists/destroy; the value never comes back', T, async () => {
    const name = `s-${RUN_ID.slice(0, 8)}`
    const made = await Secret.create(name, 'sk-never-echoed', { metadata: { env: 'test' } })
    assert.equal(made.name, name)
    assert.equal(made.version, 1)
    assert.deepEqual(made.metadata, { env: 'test' })
    assert.ok(made.secretId.startsWith('sec_'))
    assert.ok(!JSON.stringify(made).includes('sk-never-echoed'))
    assert.equal((await Secret.getInfo(name)).secretId, made.secretId)
    const v2 = await Secret.update(made.secretId, 'sk-second')
    assert.equal(v2.version, 2)
    const p = Secret.list({ limit: 1 })
    const all = []
    while (p.hasNext) all.push(...(await p.nextItems()))
    assert.ok(all.some((s) => s.secretId === made.secretId))
    assert.ok(!JSON.stringify(all).includes('sk-'))
    assert.equal(await Secret.exists(name), true)
    assert.equal(await Secret.destroy(name), true)
    assert.equal(await Secret.destroy(name), false)
    assert.equal(await Secret.exists(name), false)
    await assert.rejects(Secret.getInfo(name), SecretNotFoundError)
    await assert.rejects(Secret.update(name, 'x'), SecretNotFoundError)
  })
})

describe('egress rules', () => {
  // run.sh serves HTTPS for *.egress.test at HEARTH_TEST_EGRESS_UPSTREAM
  // (a namespace of its own, opened with --egress-allow-private, its CA
  // trusted by the agent): the guest connects there with server name
  // api.egress.test and the upstream echoes the headers it received.
  const upstream = process.env.HEARTH_TEST_EGRESS_UPSTREAM
  const guestGet = (name) => `python3 - <<'EOF'
import socket, ssl
t = ssl.create_default_context().wrap_socket(socket.create_connection(("${upstream}", 443), timeout=60), server_hostname="${name}")
t.sendall(b"GET / HTTP/1.1\\r\\nHost: ${name}\\r\\nAuthorization: Bearer guest\\r\\nConnection: close\\r\\n\\r\\n")
d = b""
while True:
    c = t.recv(65536)
    if not c:
        break
    d += c
print(d.decode().split("\\r\\n\\r\\n", 1)[1])
EOF`

  test('Secret.fill in a header: set by the host on the way out, never in the guest; bad rules are 400s', T, async (t) => {
    const name = `egress-${RUN_ID.slice(0, 8)}`
    const value = `sk-egress-${randomUUID()}`
    await Secret.create(name, value)
    try {
      const rule = (headers) => [{ transform: { headers } }]
      const is400 = (what) => (err) => {
        assert.match(err.message, /^400: /)
        assert.ok(err.message.includes(what), `error names ${what}: ${err.message}`)
        return true
      }
      await assert.rejects(Sandbox.create(TEMPLATE, { network: { rules: { 'api.egress.test': rule({ Authorization: Secret.fill('nosuch-secret') }) } } }), is400('nosuch-secret'))
      await assert.rejects(Sandbox.create(TEMPLATE, { network: { rules: { '*': rule({ A: 'b' }) } } }), is400('"*"'))
      await assert.rejects(Sandbox.create(TEMPLATE, { network: { rules: { 'a.*.egress.test': rule({ A: 'b' }) } } }), is400('a.*.egress.test'))
      if (!upstream) {
        t.skip('no HEARTH_TEST_EGRESS_UPSTREAM (run.sh sets it up as root)')
        return
      }
      const sbx = await create({ network: { rules: { '*.egress.test': rule({ Authorization: `Bearer ${Secret.fill(name)}` }) } } })
      try {
        const seen = JSON.parse((await sbx.commands.run(guestGet('api.egress.test'), { timeoutMs: 90_000 })).stdout)
        assert.equal(seen.authorization, `Bearer ${value}`, 'the upstream got the secret in place of the guest\'s header')
        // The secret is nowhere the guest can look (pattern split so that
        // only a leak matches).
        const half = value.length / 2
        const pat = `"${value.slice(0, half)}""${value.slice(half)}"`
        const r = await sbx.commands.run(`env; grep -rlsF ${pat} /etc /usr/local /root /home /tmp /run; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep -cF ${pat} || true`, { user: 'root' })
        assert.ok(!r.stdout.includes(value), `secret visible in the guest:\n${r.stdout}`)
        assert.equal(r.stdout.trim().split('\n').at(-1), '0')
        assert.match(r.stdout, /NODE_EXTRA_CA_CERTS=\/usr\/local\/share\/ca-certificates\/hearth-egress.crt/)
        await assert.rejects(sbx.updateNetwork({ rules: { 'x.egress.test': rule({ A: 'b' }) } }), /501|not implemented|create only/i)
      } finally {
        await kill(sbx)
      }
    } finally {
      await Secret.destroy(name)
    }
  })
})

// Routes the SDK 2.51 has no method for, called as its API client would.
async function api(method, path, body) {
  const res = await fetch(process.env.E2B_API_URL + path, {
    method,
    headers: { 'X-API-KEY': process.env.E2B_API_KEY, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

test('refreshes, /sandboxes/metrics, /teams and team metrics', T, async () => {
  const sbx = await create({ timeoutMs: 60_000 })
  try {
    const before = (await sbx.getInfo()).endAt.getTime()
    assert.equal((await api('POST', `/sandboxes/${sbx.sandboxId}/refreshes`, { duration: 600 })).status, 204)
    assert.ok((await sbx.getInfo()).endAt.getTime() > before + 400_000, 'refresh extended the end time')
    assert.equal((await api('POST', `/sandboxes/${sbx.sandboxId}/refreshes`, { duration: 3601 })).status, 400)

    const m = await api('GET', `/sandboxes/metrics?sandbox_ids=${sbx.sandboxId}`)
    assert.equal(m.status, 200)
    assert.ok(m.body.sandboxes[sbx.sandboxId].memTotal > 0)

    const teams = await api('GET', '/teams')
    assert.equal(teams.status, 200)
    assert.equal(teams.body.length, 1)
    const team = teams.body[0].teamID
    const tm = await api('GET', `/teams/${team}/metrics`)
    assert.equal(tm.status, 200)
    assert.ok(tm.body[0].concurrentSandboxes >= 1)
    const max = await api('GET', `/teams/${team}/metrics/max?metric=concurrent_sandboxes`)
    assert.ok(max.body.value >= 1)
    assert.equal((await api('GET', '/teams/not-my-team/metrics')).status, 404)
  } finally {
    await kill(sbx)
  }
})

test('logs: the guest console through the agent, paged (v1 and v2)', T, async () => {
  const sbx = await create()
  try {
    const v1 = await api('GET', `/sandboxes/${sbx.sandboxId}/logs?limit=1000`)
    assert.equal(v1.status, 200)
    assert.ok(v1.body.logs.length > 0, 'the console has lines')
    assert.ok(v1.body.logs.some((l) => /Linux version/.test(l.line)), 'the kernel boot is in the log')
    assert.equal(v1.body.logEntries.length, v1.body.logs.length)

    const first = await api('GET', `/v2/sandboxes/${sbx.sandboxId}/logs?limit=2`)
    assert.equal(first.body.logs.length, 2)
    const cursor = Date.parse(first.body.logs[1].timestamp) + 1
    const next = await api('GET', `/v2/sandboxes/${sbx.sandboxId}/logs?limit=2&cursor=${cursor}`)
    assert.equal(next.body.logs[0].message, v1.body.logs[2].line, 'the cursor continues after the last line')
    const found = await api('GET', `/v2/sandboxes/${sbx.sandboxId}/logs?search=Linux%20version`)
    assert.ok(found.body.logs.length >= 1 && found.body.logs.every((l) => l.message.includes('Linux version')))
    assert.equal((await api('GET', `/v2/sandboxes/${sbx.sandboxId}/logs?limit=1001`)).status, 400)
    assert.equal((await api('GET', '/sandboxes/nosuchsandbox/logs')).status, 404)
  } finally {
    await kill(sbx)
  }
})

// otherTeamKey signs up a second user (its own team) through hearth's
// native API and returns an API key of that team.
async function otherTeamKey() {
  const call = async (path, body, token) => {
    const res = await fetch(process.env.E2B_API_URL + path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...(token ? { Authorization: `Bearer ${token}` } : {}) },
      body: JSON.stringify(body),
    })
    assert.equal(res.status, 201, `${path}: ${res.status}`)
    return res.json()
  }
  const s = await call('/v1/auth/signup', { email: `other-${RUN_ID.slice(0, 8)}@example.com`, password: 'password123' })
  return (await call('/v1/api-keys', { name: 'other' }, s.token)).key
}

describe('volumes', () => {
  test('Volume.create, the content API, two sandboxes sharing a volume, pause and resume, fork, destroy; another team gets 404', T, async (t) => {
    const name = `v-${RUN_ID.slice(0, 8)}`
    const vol = await Volume.create(name)
    assert.equal(vol.name, name)
    assert.ok(vol.volumeId && vol.token)

    // The content API (E2B_VOLUME_API_URL, the volume's token).
    const w = await vol.writeFile('/docs/hello.txt', 'hello from the API')
    assert.equal(w.type, VolumeFileType.FILE)
    assert.equal(w.size, 18)
    assert.equal(await vol.readFile('/docs/hello.txt'), 'hello from the API')
    assert.deepEqual(await vol.readFile('/docs/hello.txt', { format: 'bytes' }), new TextEncoder().encode('hello from the API'))
    const dir = await vol.makeDir('/a/b', { force: true })
    assert.equal(dir.type, VolumeFileType.DIRECTORY)
    assert.equal(await vol.exists('/a/b'), true)
    const listed = await vol.list('/', { depth: 2 })
    assert.ok(listed.some((e) => e.path === '/docs/hello.txt' && e.type === VolumeFileType.FILE), JSON.stringify(listed))
    assert.ok(listed[0].mtime instanceof Date && !Number.isNaN(listed[0].mtime.getTime()))
    assert.equal((await vol.updateMetadata('/docs/hello.txt', { mode: 0o640 })).mode, 0o640)
    assert.equal((await vol.getInfo('/docs')).type, VolumeFileType.DIRECTORY)
    await vol.remove('/a')
    assert.equal(await vol.exists('/a'), false)
    await assert.rejects(vol.readFile('/nope.txt'), VolumePathNotFoundError)

    assert.ok((await Volume.list()).some((v) => v.volumeId === vol.volumeId && v.name === name))
    const again = await Volume.connect(vol.volumeId)
    assert.equal(again.token, vol.token)

    // Two sandboxes at once, by volume object and by name.
    const a = await create({ volumeMounts: { '/mnt/data': vol } })
    const b = await create({ volumeMounts: { '/data': name } })
    assert.equal((await a.commands.run('cat /mnt/data/docs/hello.txt')).stdout, 'hello from the API')
    await a.commands.run('echo written-in-a > /mnt/data/from-a.txt')
    assert.equal((await b.commands.run('cat /data/from-a.txt')).stdout, 'written-in-a\n')
    await b.files.write('/data/from-b.txt', 'written-in-b')
    assert.equal(await a.files.read('/mnt/data/from-b.txt'), 'written-in-b')
    assert.equal(await vol.readFile('/from-a.txt'), 'written-in-a\n')
    assert.deepEqual((await a.getInfo()).volumeMounts, [{ name, path: '/mnt/data' }])

    // Pause and resume: the volume is mounted again, reads and writes.
    await a.commands.run('echo before-pause > /mnt/data/paused.txt')
    const paused = await pauseOrSkip(t, a)
    if (paused === null) return
    assert.equal(paused, true)
    await b.commands.run('echo while-paused >> /data/paused.txt')
    const a2 = await Sandbox.connect(a.sandboxId)
    assert.equal((await a2.getInfo()).state, 'running')
    assert.equal((await a2.commands.run('cat /mnt/data/paused.txt')).stdout, 'before-pause\nwhile-paused\n')
    await a2.files.write('/mnt/data/after-resume.txt', 'after-resume')
    assert.equal((await b.commands.run('cat /data/after-resume.txt')).stdout, 'after-resume')
    assert.equal(await vol.readFile('/after-resume.txt'), 'after-resume')

    // A fork mounts the same volume (listed, and its writes are shared).
    const [f] = await a2.fork({ count: 1, timeoutMs: 600_000 })
    created.add(f.sandboxId)
    assert.deepEqual((await f.getInfo()).volumeMounts, [{ name, path: '/mnt/data' }])
    await f.commands.run('echo from-fork > /mnt/data/fork.txt')
    assert.equal((await b.commands.run('cat /data/fork.txt')).stdout, 'from-fork\n')
    await kill(f)

    // What a sandbox with volumes cannot do, and bad mounts.
    await assert.rejects(Volume.destroy(vol.volumeId), /mounted by a sandbox/)
    await assert.rejects(create({ volumeMounts: { 'relative/path': vol } }), /volumeMounts: mount path/)
    await assert.rejects(create({ volumeMounts: { '/x': 'no-such-volume' } }), /not found/)

    // Another team's view: 404 everywhere.
    const keyB = await otherTeamKey()
    await assert.rejects(Volume.getInfo(vol.volumeId, { apiKey: keyB }), VolumeNotFoundError)
    assert.equal(await Volume.destroy(vol.volumeId, { apiKey: keyB }), false)
    assert.ok(!(await Volume.list({ apiKey: keyB })).some((v) => v.volumeId === vol.volumeId))
    await assert.rejects(create({ volumeMounts: { '/x': name }, apiKey: keyB }), /not found/)

    // The volume outlives its sandboxes.
    await kill(a)
    await kill(b)
    assert.equal(await vol.readFile('/from-b.txt'), 'written-in-b')
    assert.equal(await Volume.destroy(vol.volumeId), true)
    assert.equal(await Volume.destroy(vol.volumeId), false)
    await assert.rejects(Volume.getInfo(vol.volumeId), VolumeNotFoundError)
  })
})
