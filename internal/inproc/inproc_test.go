package inproc

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStatusHeadersAndBody(t *testing.T) {
	t.Parallel()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Route") != "sbx1" || r.URL.Path != "/files" {
			http.Error(w, "bad route "+r.Header.Get("X-Route")+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo", "yes")
		w.WriteHeader(http.StatusCreated)
		w.Write(append([]byte("got:"), body...))
	})
	c := &http.Client{Transport: &Transport{Handler: h, Prepare: func(r *http.Request) { r.Header.Set("X-Route", "sbx1") }}}
	resp, err := c.Post("http://sandbox/files", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("X-Echo") != "yes" || string(b) != "got:hello" {
		t.Fatalf("got %d %v %q", resp.StatusCode, resp.Header, b)
	}
}

// The first line reaches the client while the handler still runs: a
// buffering transport would deadlock here (the handler waits for the
// client to have read it).
func TestStreams(t *testing.T) {
	t.Parallel()
	seen := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-seen:
		case <-time.After(30 * time.Second): // failure guard only
			io.WriteString(w, "timeout\n")
			return
		}
		io.WriteString(w, "second\n")
	})
	resp, err := (&http.Client{Transport: &Transport{Handler: h}}).Get("http://x/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	l1, _ := rd.ReadString('\n')
	close(seen)
	l2, _ := rd.ReadString('\n')
	if l1 != "first\n" || l2 != "second\n" {
		t.Fatalf("lines %q %q", l1, l2)
	}
}

func TestHandlerWritesNothingAndPanics(t *testing.T) {
	t.Parallel()
	empty := &Transport{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	resp, err := (&http.Client{Transport: empty}).Get("http://x/")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("empty handler: %v %v", resp, err)
	}
	resp.Body.Close()
	boom := &Transport{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") })}
	resp, err = (&http.Client{Transport: boom}).Get("http://x/")
	if err != nil || resp.StatusCode != http.StatusInternalServerError {
		t.Fatalf("panicking handler: %v %v", resp, err)
	}
	resp.Body.Close()
}
