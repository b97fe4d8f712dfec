// Package deploycheck checks a hearth deployment from the outside, as an
// SDK would reach it (`hearth doctor --domain D`): DNS for api.D and for a
// sandbox host <port>-<id>.D, the certificate served for both (coverage,
// chain, expiry), that the wildcard reaches hearth's sandbox proxy, the
// clock against the server's, and — with an API key — the control plane ↔
// agent ↔ guest path, by creating a small sandbox and reaching its envd
// through https://49983-<id>.D.
package deploycheck

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hearth-sandbox/hearth/internal/apiwire"
	"github.com/hearth-sandbox/hearth/internal/cli"
	"github.com/hearth-sandbox/hearth/internal/sitetls"
)

// Check is one line of the report.
type Check struct {
	Name   string
	OK     bool
	Skip   bool   // not run (and why in Detail)
	Detail string // what was found, or what to fix
}

// Resolver looks names up (net.DefaultResolver in production).
type Resolver interface {
	LookupHost(ctx context.Context, host string) ([]string, error)
}

// Options for Run.
type Options struct {
	Domain string
	Port   string // HTTPS port; default 443
	// Connect sends every connection to this host:port instead of what DNS
	// says (checking a server before DNS points at it); DNS is then still
	// looked up and reported.
	Connect  string
	RootCAs  *x509.CertPool // nil: the system's
	Resolver Resolver       // nil: net.DefaultResolver
	// APIKey enables the sandbox probe (create Template, reach its envd
	// through the wildcard, delete it).
	APIKey   string
	Template string // default "tiny"
	// MaxSkew is the clock difference reported as a failure (default 30s:
	// JWTs and certificates tolerate little more).
	MaxSkew time.Duration
	Now     func() time.Time
}

// Run performs the checks in order; later ones that depend on a failed one
// are still attempted when they can say something useful.
func Run(ctx context.Context, o Options) []Check {
	if o.Port == "" {
		o.Port = "443"
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.Template == "" {
		o.Template = "tiny"
	}
	if o.MaxSkew == 0 {
		o.MaxSkew = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	domain := strings.TrimSuffix(strings.ToLower(o.Domain), ".")
	api := "api." + domain
	sandboxHost := "49983-doctor" + randomHex(6) + "." + domain

	var checks []Check
	add := func(c Check) { checks = append(checks, c) }
	add(dnsCheck(ctx, o.Resolver, api))
	add(dnsCheck(ctx, o.Resolver, sandboxHost))

	client := httpClient(o)
	add(certCheck(ctx, o, api, domain))
	add(certCheck(ctx, o, sandboxHost, domain))

	base := "https://" + hostPort(api, o.Port)
	skew, health := apiHealth(ctx, client, base, o.Now)
	add(health)
	if health.OK {
		add(skewCheck(skew, o.MaxSkew))
	}
	add(wildcardCheck(ctx, client, "https://"+hostPort(sandboxHost, o.Port)))
	add(sandboxProbe(ctx, client, o, base, domain))
	return checks
}

// Failed reports whether any check failed (skipped ones do not count).
func Failed(checks []Check) bool {
	for _, c := range checks {
		if !c.OK && !c.Skip {
			return true
		}
	}
	return false
}

func hostPort(host, port string) string {
	if port == "443" {
		return host
	}
	return net.JoinHostPort(host, port)
}

func dnsCheck(ctx context.Context, r Resolver, host string) Check {
	c := Check{Name: "DNS " + host}
	addrs, err := r.LookupHost(ctx, host)
	if err != nil {
		c.Detail = fmt.Sprintf("%v: add an A/AAAA record for it (a wildcard *.<domain> covers api and sandbox hosts)", err)
		return c
	}
	c.OK, c.Detail = true, strings.Join(addrs, ", ")
	return c
}

func (o Options) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if o.Connect != "" {
		addr = o.Connect
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	return d.DialContext(ctx, network, addr)
}

func httpClient(o Options) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:           nil, // the deployment itself, not a proxy's view of it
			DialContext:     o.dial,
			TLSClientConfig: &tls.Config{RootCAs: o.RootCAs},
		},
	}
}

// certCheck verifies the chain and host name the way SDKs do, then applies
// hearth's own rules (sitetls.Check: *.D covered, expiry warnings).
func certCheck(ctx context.Context, o Options, host, domain string) Check {
	c := Check{Name: "TLS certificate for " + host}
	conn, err := o.dial(ctx, "tcp", net.JoinHostPort(host, o.Port))
	if err != nil {
		c.Detail = fmt.Sprintf("connect: %v", err)
		return c
	}
	defer conn.Close()
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: o.RootCAs})
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Detail = fmt.Sprintf("%v: serve a certificate for %s and *.%s from a CA clients trust (--tls-cert, --tls-key)", err, domain, domain)
		return c
	}
	leaf := tc.ConnectionState().PeerCertificates[0]
	warnings, err := sitetls.Check(leaf, domain, o.Now())
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	c.OK = true
	c.Detail = fmt.Sprintf("valid until %s (%d days), issued by %s", leaf.NotAfter.UTC().Format(time.DateOnly),
		int(leaf.NotAfter.Sub(o.Now()).Hours()/24), leaf.Issuer.CommonName)
	if len(warnings) > 0 {
		c.Detail += "; warning: " + strings.Join(warnings, "; ")
	}
	return c
}

// apiHealth calls /healthz and returns the server clock's offset from ours
// (Date header, one-second resolution, taken mid-request).
func apiHealth(ctx context.Context, client *http.Client, base string, now func() time.Time) (time.Duration, Check) {
	c := Check{Name: "control plane " + base + "/healthz"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
	if err != nil {
		c.Detail = err.Error()
		return 0, c
	}
	start := now()
	resp, err := client.Do(req)
	if err != nil {
		c.Detail = err.Error()
		return 0, c
	}
	defer resp.Body.Close()
	end := now()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		c.Detail = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
		return 0, c
	}
	c.OK, c.Detail = true, "store reachable"
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return 0, c
	}
	mid := start.Add(end.Sub(start) / 2)
	return date.Sub(mid.Truncate(time.Second)), c
}

func skewCheck(skew, limit time.Duration) Check {
	c := Check{Name: "clock skew (server - this machine)"}
	abs := skew
	if abs < 0 {
		abs = -abs
	}
	c.Detail = fmt.Sprintf("%s (±1s from the Date header's resolution)", skew.Round(time.Second))
	if abs > limit {
		c.Detail += fmt.Sprintf(": more than %s; run NTP (systemd-timesyncd, chrony) on both machines", limit)
		return c
	}
	c.OK = true
	return c
}

// wildcardCheck: a made-up sandbox host must reach hearth's proxy, which
// answers envd's /health of an unknown sandbox with 502 {code, message}
// "sandbox ... not found" — anything else is another server (a default
// vhost, a load balancer) taking the wildcard.
func wildcardCheck(ctx context.Context, client *http.Client, base string) Check {
	c := Check{Name: "sandbox traffic " + base}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	resp, err := client.Do(req)
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	defer resp.Body.Close()
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode == http.StatusBadGateway && json.Unmarshal(body, &e) == nil && strings.Contains(e.Message, "not found") {
		c.OK, c.Detail = true, "reaches hearth's sandbox proxy"
		return c
	}
	c.Detail = fmt.Sprintf("HTTP %d %.120q: not hearth's sandbox proxy; route *.<domain> to hearth with the Host header kept", resp.StatusCode, body)
	return c
}

// sandboxProbe creates a sandbox, reaches its envd through the wildcard
// (control plane → agent → guest), and deletes it.
func sandboxProbe(ctx context.Context, client *http.Client, o Options, base, domain string) (c Check) {
	c.Name = "control plane → agent → sandbox"
	if o.APIKey == "" {
		c.Skip, c.Detail = true, "give --api-key (or HEARTH_API_KEY) to create a probe sandbox from template "+o.Template
		return c
	}
	api := cli.NewClient(base, o.APIKey, "")
	api.HTTP = client
	timeout := 120
	start := time.Now()
	sb, err := api.CreateSandbox(ctx, apiwire.CreateSandbox{Template: o.Template, TimeoutS: &timeout, Metadata: map[string]string{"created-by": "hearth doctor"}})
	if err != nil {
		c.Detail = fmt.Sprintf("create a %s sandbox: %v", o.Template, err)
		return c
	}
	created := time.Since(start)
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := api.DeleteSandbox(dctx, sb.ID); err != nil {
			c.Detail += fmt.Sprintf("; deleting probe sandbox %s failed: %v", sb.ID, err)
		}
	}()
	url := "https://" + hostPort(fmt.Sprintf("49983-%s.%s", sb.ID, domain), o.Port) + "/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	resp, err := client.Do(req)
	if err != nil {
		c.Detail = fmt.Sprintf("sandbox %s created in %s, but %s: %v", sb.ID, created.Round(time.Millisecond), url, err)
		return c
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		c.Detail = fmt.Sprintf("sandbox %s created, but its envd at %s answered HTTP %d", sb.ID, url, resp.StatusCode)
		return c
	}
	c.OK, c.Detail = true, fmt.Sprintf("sandbox %s created in %s, envd answered at %s", sb.ID, created.Round(time.Millisecond), url)
	return c
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ErrFailed is returned by the command when a check failed.
var ErrFailed = errors.New("deployment check failed")

// Format writes the checks as a table.
func Format(w io.Writer, checks []Check) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, c := range checks {
		mark := "ok"
		switch {
		case c.Skip:
			mark = "skip"
		case !c.OK:
			mark = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", mark, c.Name, c.Detail)
	}
	return tw.Flush()
}
