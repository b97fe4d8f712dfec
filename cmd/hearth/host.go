package main

// `hearth host add|ls|drain|undrain|rm`: the operator's view of the fleet, through the REST
// API (POST/GET /v1/admin/hosts) with the session of `hearth login` (a
// platform admin's; API keys are refused by those routes).

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/sandbox"
)

func newHostCmd() *cobra.Command {
	var f apiFlags
	cmd := &cobra.Command{
		Use:   "host",
		Short: "Manage the fleet's hosts (platform admins)",
		Long: `Manage the host agents of a control plane running in fleet mode
(` + "`hearth server`" + ` without --agent-url). Needs a platform admin's session
(` + "`hearth login`" + `, then ` + "`hearth admin promote`" + ` on the server).`,
	}
	f.register(cmd)
	cmd.AddCommand(newHostAddCmd(&f), newHostLsCmd(&f),
		newHostStatusCmd(&f, "drain", "drain", "Stop placing new sandboxes on a host (its sandboxes keep running)"),
		newHostStatusCmd(&f, "undrain", "ready", "Put a drained host back into placement"),
		newHostRmCmd(&f))
	return cmd
}

func newHostAddCmd(f *apiFlags) *cobra.Command {
	var ttl time.Duration
	var address string
	cmd := &cobra.Command{
		Use:   "add",
		Short: "Create a one-time registration token and print the agent command line",
		Args:  cobra.NoArgs,
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, err := f.resolve()
			if err != nil {
				return err
			}
			var tok apiwire.HostToken
			if err := adminCall(cmd.Context(), c, http.MethodPost, "/v1/admin/hosts", apiwire.NewHostToken{TTLS: int(ttl / time.Second)}, &tok); err != nil {
				return err
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), tok)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Registration token (works once, until %s):\n\n  %s\n\n", tok.ExpiresAt.Local().Format(time.RFC1123), tok.Token)
			fmt.Fprintf(w, "On the new host, as root (images built with `hearth image build`):\n\n")
			fmt.Fprintf(w, "  hearth agent --control-plane %s \\\n    --register %s \\\n    --ca-fingerprint %s \\\n    --listen 0.0.0.0:7070 --address %s\n\n",
				strings.TrimRight(c.URL, "/"), tok.Token, tok.CAFingerprint, address)
			fmt.Fprintln(w, "Then `hearth host ls` shows it once it sends its first heartbeat.")
			return nil
		}),
	}
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default: the server's, 24h; at most 168h)")
	cmd.Flags().StringVar(&address, "address", "HOST:7070", "the new agent's address as the control plane reaches it (for the printed command)")
	return cmd
}

func newHostLsCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List hosts with status, capacity, usage, last heartbeat and sandboxes",
		Args:    cobra.NoArgs,
		RunE: explained(func(cmd *cobra.Command, _ []string) error {
			c, err := f.resolve()
			if err != nil {
				return err
			}
			var hosts []apiwire.Host
			if err := adminCall(cmd.Context(), c, http.MethodGet, "/v1/admin/hosts", nil, &hosts); err != nil {
				return err
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), hosts)
			}
			now := time.Now()
			t := cli.NewTable(cmd.OutOrStdout(), "name", "status", "address", "vcpus", "memory", "sandboxes", "heartbeat", "id")
			for _, h := range hosts {
				hb := "-"
				if h.LastHeartbeat != nil {
					hb = cli.Age(now, *h.LastHeartbeat) + " ago"
				}
				t.Row(h.Name, h.Status, h.Address,
					fmt.Sprintf("%d/%d", h.Usage.VCPUs, h.Capacity.VCPUs),
					fmt.Sprintf("%s/%s", cli.Bytes(int64(h.Usage.MemoryMB)<<20), cli.Bytes(int64(h.Capacity.MemoryMB)<<20)),
					sandboxCounts(h), hb, h.ID)
			}
			return t.Flush()
		}),
	}
}

// newHostStatusCmd is `hearth host drain|undrain ID`: POST
// /v1/admin/hosts/{id}/<action>, then the host's new line.
func newHostStatusCmd(f *apiFlags, use, action, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use + " ID",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.resolve()
			if err != nil {
				return err
			}
			var h apiwire.Host
			if err := adminCall(cmd.Context(), c, http.MethodPost, "/v1/admin/hosts/"+url.PathEscape(args[0])+"/"+action, nil, &h); err != nil {
				return err
			}
			if f.json() {
				return cli.WriteJSON(cmd.OutOrStdout(), h)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "host %s (%s) is %s; sandboxes: %s\n", h.Name, h.ID, h.Status, sandboxCounts(h))
			return nil
		}),
	}
}

func newHostRmCmd(f *apiFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID",
		Aliases: []string{"remove"},
		Short:   "Remove a host that no sandbox needs any more (drain it first)",
		Long: `Remove a host from the fleet: its row goes and the control plane forgets
its client; its agent's heartbeats are refused from then on. Refused while
sandboxes on it are running, paused or in transition: drain the host
(` + "`hearth host drain ID`" + `) so nothing new lands there, then destroy them or
wait for them to end.`,
		Args: cobra.ExactArgs(1),
		RunE: explained(func(cmd *cobra.Command, args []string) error {
			c, err := f.resolve()
			if err != nil {
				return err
			}
			if err := adminCall(cmd.Context(), c, http.MethodDelete, "/v1/admin/hosts/"+url.PathEscape(args[0]), nil, nil); err != nil {
				return err
			}
			if !f.json() {
				fmt.Fprintf(cmd.OutOrStdout(), "host %s removed\n", args[0])
			}
			return nil
		}),
	}
}

// sandboxCounts is "3 (running 2, paused 1)": the agent's own count, then
// the store's rows by status (stopped ones left out: they pile up).
func sandboxCounts(h apiwire.Host) string {
	var parts []string
	for st, n := range h.Sandboxes {
		if st != string(sandbox.StateStopped) && n > 0 {
			parts = append(parts, st+" "+strconv.Itoa(n))
		}
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return strconv.Itoa(h.SandboxCount)
	}
	return fmt.Sprintf("%d (%s)", h.SandboxCount, strings.Join(parts, ", "))
}

// adminCall sends an admin request with the session token (admin routes do
// not take API keys) and decodes the JSON answer.
func adminCall(ctx context.Context, c cli.Config, method, path string, in, out any) error {
	if c.URL == "" {
		return &cli.UsageError{Msg: "no hearth URL configured", Hint: "run `hearth login --url URL`, or pass --url"}
	}
	if c.Token == "" {
		return &cli.UsageError{Msg: "host commands need a platform admin's session", Hint: "run `hearth login` with an admin account"}
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.URL, "/")+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	req.Header.Set("User-Agent", "hearth-cli")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &cli.ConnError{URL: c.URL, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e struct{ Message string }
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
		if e.Message == "" {
			e.Message = resp.Status
		}
		u, _ := url.Parse(path)
		return &cli.APIError{Status: resp.StatusCode, Message: e.Message, Method: method, Path: u.Path}
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s: %w", method, path, err)
	}
	return nil
}
