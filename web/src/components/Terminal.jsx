import { useEffect, useRef, useState } from 'react';
import { Terminal as XTerm } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import '@xterm/xterm/css/xterm.css';
import { csrfToken, teamQuery } from '../api.js';
import { Button, Spinner } from './ui.jsx';

// Terminal is a shell in the sandbox on a PTY, over the dashboard's
// WebSocket (internal/dashboard/terminal.go documents the protocol):
// binary frames carry bytes both ways, text frames carry JSON control
// messages (resize from here; ready/exit/error from the server).
export default function Terminal({ sandboxId }) {
  const box = useRef(null);
  const [state, setState] = useState({ phase: 'connecting' });
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const term = new XTerm({
      cursorBlink: true,
      fontFamily: 'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace',
      fontSize: 13,
      lineHeight: 1.2,
      scrollback: 5000,
      theme: { background: '#0f172a', foreground: '#e2e8f0', cursor: '#f97316', selectionBackground: '#334155' },
    });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box.current);
    try {
      fit.fit();
    } catch {
      // not laid out yet
    }

    const proto = window.location.protocol === 'https:' ? 'wss' : 'ws';
    const url =
      `${proto}://${window.location.host}/ws/sandboxes/${encodeURIComponent(sandboxId)}/terminal` +
      `?cols=${term.cols}&rows=${term.rows}&csrf=${encodeURIComponent(csrfToken())}${teamQuery()}`;
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    let ended = false;
    const enc = new TextEncoder();

    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') {
        term.write(new Uint8Array(ev.data));
        return;
      }
      let m;
      try {
        m = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (m.type === 'ready') {
        setState({ phase: 'open' });
        term.focus();
      } else if (m.type === 'exit') {
        ended = true;
        setState({ phase: 'exited', message: `Shell exited (${m.status || `code ${m.exit_code}`}).` });
      } else if (m.type === 'error') {
        ended = true;
        setState({ phase: 'error', message: m.message });
      }
    };
    ws.onclose = (ev) => {
      if (ended) return;
      setState({
        phase: 'error',
        message:
          ev.code === 1006
            ? 'Could not connect to the terminal (is the sandbox running and are you logged in?).'
            : `Terminal closed${ev.reason ? `: ${ev.reason}` : ''}.`,
      });
    };
    const dataSub = term.onData((d) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
    });
    const resizeSub = term.onResize(({ cols, rows }) => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', cols, rows }));
    });
    const ro = new ResizeObserver(() => {
      try {
        fit.fit();
      } catch {
        // hidden
      }
    });
    ro.observe(box.current);

    return () => {
      ended = true;
      ro.disconnect();
      dataSub.dispose();
      resizeSub.dispose();
      ws.close();
      term.dispose();
    };
  }, [sandboxId, attempt]);

  return (
    <div className="terminal-wrap">
      <div className="terminal-bar">
        <span className={`term-state term-${state.phase}`} data-testid="terminal-state" data-phase={state.phase}>
          {state.phase === 'connecting' && <Spinner label="Connecting…" />}
          {state.phase === 'open' && 'Connected'}
          {(state.phase === 'exited' || state.phase === 'error') && state.message}
        </span>
        {(state.phase === 'exited' || state.phase === 'error') && (
          <Button
            className="btn-small"
            onClick={() => {
              setState({ phase: 'connecting' });
              setAttempt((a) => a + 1);
            }}
          >
            Reconnect
          </Button>
        )}
      </div>
      <div className="terminal" ref={box} data-testid="terminal" />
    </div>
  );
}
