package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// QMP is a minimal client for the QEMU Machine Protocol: JSON objects over a
// unix socket. After the greeting and qmp_capabilities, commands carry an
// "id" so responses can be matched while asynchronous events interleave.
type QMP struct {
	conn *net.UnixConn

	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan qmpResponse
	closed  error
	events  chan Event
	done    chan struct{}
}

// Event is an asynchronous QMP event.
type Event struct {
	Name string          `json:"event"`
	Data json.RawMessage `json:"data"`
}

// QMPError is an error response from QEMU.
type QMPError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *QMPError) Error() string { return "qmp: " + e.Class + ": " + e.Desc }

type qmpResponse struct {
	Return json.RawMessage `json:"return"`
	Error  *QMPError       `json:"error"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
	ID     string          `json:"id"`
	QMP    json.RawMessage `json:"QMP"`
}

// DialQMP connects to a QMP socket, retrying until it appears or ctx ends
// (QEMU creates it shortly after start), and negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var conn net.Conn
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			conn = c
			break
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("dial qmp %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial qmp %s: %w (last: %v)", path, ctx.Err(), err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	q := &QMP{
		conn:    conn.(*net.UnixConn),
		pending: map[string]chan qmpResponse{},
		events:  make(chan Event, 64),
		done:    make(chan struct{}),
	}
	r := bufio.NewReader(conn)
	// Greeting first, synchronously, then hand the reader to the loop.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(dl)
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	var greet qmpResponse
	if err := json.Unmarshal(line, &greet); err != nil || greet.QMP == nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting %q: not a QMP greeting", line)
	}
	_ = conn.SetReadDeadline(time.Time{})
	go q.readLoop(r)
	if err := q.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

func (q *QMP) readLoop(r *bufio.Reader) {
	defer close(q.done)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			q.fail(fmt.Errorf("qmp connection closed: %w", err))
			return
		}
		var resp qmpResponse
		if err := json.Unmarshal(line, &resp); err != nil {
			continue // not ours to interpret; QEMU only sends objects
		}
		if resp.Event != "" {
			select {
			case q.events <- Event{Name: resp.Event, Data: resp.Data}:
			default: // nobody is listening; events are advisory
			}
			continue
		}
		q.mu.Lock()
		ch := q.pending[resp.ID]
		delete(q.pending, resp.ID)
		q.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
	}
}

func (q *QMP) fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed == nil {
		q.closed = err
	}
	for id, ch := range q.pending {
		close(ch)
		delete(q.pending, id)
	}
}

// Events returns the event channel. Events are dropped when it is full.
func (q *QMP) Events() <-chan Event { return q.events }

// Close closes the connection.
func (q *QMP) Close() error {
	err := q.conn.Close()
	<-q.done
	return err
}

// Execute runs a command; result (may be nil) receives the "return" value.
func (q *QMP) Execute(ctx context.Context, command string, args any, result any) error {
	return q.execute(ctx, command, args, result, nil)
}

// ExecuteWithFile runs a command passing f over SCM_RIGHTS (for getfd).
func (q *QMP) ExecuteWithFile(ctx context.Context, command string, args any, f *os.File) error {
	return q.execute(ctx, command, args, nil, f)
}

func (q *QMP) execute(ctx context.Context, command string, args any, result any, f *os.File) error {
	q.mu.Lock()
	if q.closed != nil {
		err := q.closed
		q.mu.Unlock()
		return err
	}
	q.nextID++
	id := fmt.Sprintf("h%d", q.nextID)
	ch := make(chan qmpResponse, 1)
	q.pending[id] = ch
	q.mu.Unlock()

	msg := map[string]any{"execute": command, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	b, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	b = append(b, '\n')
	q.writeMu.Lock()
	if f != nil {
		_, _, err = q.conn.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil)
	} else {
		_, err = q.conn.Write(b)
	}
	q.writeMu.Unlock()
	if err != nil {
		q.forget(id)
		return fmt.Errorf("qmp %s: write: %w", command, err)
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			q.mu.Lock()
			err := q.closed
			q.mu.Unlock()
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		if resp.Error != nil {
			return fmt.Errorf("qmp %s: %w", command, resp.Error)
		}
		if result != nil && len(resp.Return) > 0 {
			if err := json.Unmarshal(resp.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decode return: %w", command, err)
			}
		}
		return nil
	case <-ctx.Done():
		q.forget(id)
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	}
}

func (q *QMP) forget(id string) {
	q.mu.Lock()
	delete(q.pending, id)
	q.mu.Unlock()
}

// Status is the reply of query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "paused", "postmigrate", "inmigrate", "prelaunch", ...
}

// QueryStatus returns the VM run state.
func (q *QMP) QueryStatus(ctx context.Context) (Status, error) {
	var s Status
	err := q.Execute(ctx, "query-status", nil, &s)
	return s, err
}

// MigrationInfo is the part of query-migrate we read.
type MigrationInfo struct {
	Status    string `json:"status"` // "setup", "active", "completed", "failed", ...
	ErrorDesc string `json:"error-desc"`
	TotalTime int64  `json:"total-time"`
	// Downtime is how long the guest stood still, in ms (QEMU's count from
	// the stop to the end of the migration); set once completed.
	Downtime int64 `json:"downtime"`
}

// WaitMigration polls query-migrate until the migration completes or fails.
// Polling (rather than MIGRATION events) keeps it independent of who else
// reads events; migrations with x-ignore-shared take milliseconds.
func (q *QMP) WaitMigration(ctx context.Context) (MigrationInfo, error) {
	delay := time.Millisecond
	for {
		var mi MigrationInfo
		if err := q.Execute(ctx, "query-migrate", nil, &mi); err != nil {
			return mi, err
		}
		switch mi.Status {
		case "completed":
			return mi, nil
		case "failed", "cancelled":
			return mi, fmt.Errorf("migration %s: %s", mi.Status, mi.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return mi, fmt.Errorf("migration %s: %w", mi.Status, ctx.Err())
		case <-time.After(delay):
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}

// SetMigrationCapabilities enables or disables migration capabilities.
func (q *QMP) SetMigrationCapabilities(ctx context.Context, caps map[string]bool) error {
	type capability struct {
		Capability string `json:"capability"`
		State      bool   `json:"state"`
	}
	list := make([]capability, 0, len(caps))
	for k, v := range caps {
		list = append(list, capability{k, v})
	}
	return q.Execute(ctx, "migrate-set-capabilities", map[string]any{"capabilities": list}, nil)
}
