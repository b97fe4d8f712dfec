// Helpers shared by the suites in this directory.

// eventually polls fn until it returns something truthy, at most tries
// times delayMs apart, and throws with the last error otherwise.
export async function eventually(fn, what, tries = 100, delayMs = 100) {
  let last
  for (let i = 0; i < tries; i++) {
    try {
      const v = await fn()
      if (v) return v
    } catch (err) {
      last = err
    }
    await new Promise((r) => setTimeout(r, delayMs))
  }
  throw new Error(`${what} did not happen${last ? `: ${last.message}` : ''}`)
}
