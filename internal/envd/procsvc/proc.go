package procsvc

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"

	rpc "github.com/hearth-sandbox/hearth/gen/envd/process"
)

// drainGrace bounds how long output is still read after the process exited.
// A grandchild that inherited stdout (e.g. `cmd &`) keeps the pipe open
// forever; without this bound the EndEvent would never be sent.
const drainGrace = 250 * time.Millisecond

// proc is one process started through Start, from launch until its EndEvent.
type proc struct {
	pid    uint32
	tag    *string
	config *rpc.ProcessConfig
	cmd    *exec.Cmd

	ptyFile *os.File // PTY master; nil for pipe mode

	stdinMu sync.Mutex
	stdin   io.WriteCloser // nil when stdin is disabled or closed

	mu   sync.Mutex
	subs map[*subscriber]struct{}
	done bool
	end  *rpc.ProcessEvent_EndEvent

	exited chan struct{} // closed once the EndEvent was published
}

// subscriber is one stream (Start or Connect) receiving a process's events.
// Its queue is unbounded so a slow client never stalls the process or the
// other subscribers.
type subscriber struct {
	mu     sync.Mutex
	queue  []*rpc.ProcessEvent
	notify chan struct{}
}

func newSubscriber() *subscriber { return &subscriber{notify: make(chan struct{}, 1)} }

func (s *subscriber) push(ev *rpc.ProcessEvent) {
	s.mu.Lock()
	s.queue = append(s.queue, ev)
	s.mu.Unlock()
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func (s *subscriber) take() []*rpc.ProcessEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// subscribe registers s; it fails when the process has already ended.
func (p *proc) subscribe(s *subscriber) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return false
	}
	p.subs[s] = struct{}{}
	return true
}

func (p *proc) unsubscribe(s *subscriber) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.subs, s)
}

func (p *proc) publish(ev *rpc.ProcessEvent) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for s := range p.subs {
		s.push(ev)
	}
}

func dataEvent(d *rpc.ProcessEvent_DataEvent) *rpc.ProcessEvent {
	return &rpc.ProcessEvent{Event: &rpc.ProcessEvent_Data{Data: d}}
}

// pump copies one output stream into data events until EOF or error.
func (p *proc) pump(r io.Reader, wrap func([]byte) *rpc.ProcessEvent_DataEvent) {
	buf := make([]byte, 32*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := make([]byte, n)
			copy(chunk, buf[:n])
			p.publish(dataEvent(wrap(chunk)))
		}
		if err != nil {
			return
		}
	}
}

// wait reaps the process, lets the readers drain, then publishes the
// EndEvent after calling onDone. readers are the read ends the pumps use.
func (p *proc) wait(pumps *sync.WaitGroup, readers []*os.File, onDone func(*rpc.ProcessEvent_EndEvent)) {
	waitErr := p.cmd.Wait()
	drained := make(chan struct{})
	go func() { pumps.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainGrace):
		// Closing a pollable fd unblocks its pending Read.
		for _, r := range readers {
			_ = r.Close()
		}
		<-drained
	}
	for _, r := range readers {
		_ = r.Close()
	}
	p.closeStdin()

	end := endEvent(p.cmd.ProcessState, waitErr)
	// Out of the service's table before anyone hears of the end: a client
	// that got the EndEvent and signals or connects again gets not_found,
	// never a process that is finished but still listed.
	onDone(end)
	p.mu.Lock()
	p.done = true
	p.end = end
	ev := &rpc.ProcessEvent{Event: &rpc.ProcessEvent_End{End: end}}
	for s := range p.subs {
		s.push(ev)
	}
	p.subs = nil
	p.mu.Unlock()
	close(p.exited)
}

func endEvent(st *os.ProcessState, waitErr error) *rpc.ProcessEvent_EndEvent {
	end := &rpc.ProcessEvent_EndEvent{}
	if st == nil {
		msg := "process state unavailable"
		if waitErr != nil {
			msg = waitErr.Error()
		}
		end.ExitCode = -1
		end.Status = "error"
		end.Error = &msg
		return end
	}
	end.Exited = st.Exited()
	end.ExitCode = int32(st.ExitCode())
	// The SDK shows status as the reason; mirror os.ProcessState's wording
	// ("exit status 1", "signal: killed"), as E2B's envd does.
	end.Status = st.String()
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		end.ExitCode = -1
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		msg := waitErr.Error()
		end.Error = &msg
	} else if !st.Success() {
		msg := st.String()
		end.Error = &msg
	}
	return end
}

func (p *proc) closeStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdin != nil {
		_ = p.stdin.Close()
		p.stdin = nil
	}
}

// signal sends sig to the process group so children started by a shell die
// too; it falls back to the leader alone when the group is gone.
func (p *proc) signal(sig syscall.Signal) error {
	if err := syscall.Kill(-int(p.pid), sig); err == nil {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

func (p *proc) resize(cols, rows uint32) error {
	return pty.Setsize(p.ptyFile, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)})
}

func (p *proc) info() *rpc.ProcessInfo {
	return &rpc.ProcessInfo{Config: p.config, Pid: p.pid, Tag: p.tag}
}
