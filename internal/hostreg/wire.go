// Package hostreg is the protocol by which host agents join the control
// plane and stay known to it: one-time registration tokens, registration
// (CSR in, CA-signed certificate out), heartbeats carrying capacity and
// usage, certificate renewal, and the Monitor that marks silent hosts
// unreachable.
//
// Routes (JSON over HTTP, served by Server.Handler):
//
//	POST /v1/hosts/register        {token, name, address, csr_pem, capacity} → {host_id, cert_pem, ca_pem}
//	POST /v1/hosts/{id}/heartbeat  Heartbeat → HeartbeatResponse   (agent-authenticated)
//	POST /v1/hosts/{id}/renew      {csr_pem} → {cert_pem, ca_pem}  (agent-authenticated)
//
// # Authentication
//
// Registration is authenticated by the one-time token alone. It should run
// over HTTPS; where the control plane is plain HTTP, the agent pins the CA
// with --ca-fingerprint (pki.Fingerprint), and in every case it checks the
// returned certificate against its own key and the returned CA.
//
// Agent calls are authenticated by the agent's CA-issued certificate in one
// of two ways, so they work whether or not TLS reaches the control plane
// (a TLS-terminating proxy in front strips client certificates):
//
//   - a verified TLS client certificate on the connection (mTLS), or
//   - a request signature: Hearth-Host-Cert carries the certificate (base64
//     DER), Hearth-Host-Date the RFC 3339 time, Hearth-Host-Signature an
//     ECDSA-SHA256 signature by the certificate's key over
//     "hearth-host-request-v1\n" METHOD "\n" PATH "\n" DATE "\n" hex(SHA-256(body)).
//     The server requires the certificate to chain to its CA with client
//     auth, name the host in the path, the date to be within MaxSkew of its
//     clock and newer than the last one it accepted for that host and route
//     (no replays within the window). Bodies carry no secrets, so plain HTTP
//     costs confidentiality of usage numbers only.
package hostreg

import "time"

// Capacity is what a host offers.
type Capacity struct {
	VCPUs    int `json:"vcpus"`
	MemoryMB int `json:"memory_mb"`
	DiskMB   int `json:"disk_mb"`
}

// RegisterRequest is the body of POST /v1/hosts/register.
type RegisterRequest struct {
	Token    string   `json:"token"`
	Name     string   `json:"name"`
	Address  string   `json:"address"` // host:port of the agent's RPC listener
	CSRPEM   string   `json:"csr_pem"`
	Capacity Capacity `json:"capacity"` // optional: lets placement use the host before its first heartbeat
}

// RegisterResponse carries the agent's new identity.
type RegisterResponse struct {
	HostID  string `json:"host_id"`
	CertPEM string `json:"cert_pem"`
	CAPEM   string `json:"ca_pem"`
}

// SandboxReport is one sandbox as the agent sees it (optional in
// heartbeats; the reconciler asks agents directly).
type SandboxReport struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// Heartbeat is the body of POST /v1/hosts/{id}/heartbeat.
type Heartbeat struct {
	Capacity
	UsedVCPUs    int             `json:"used_vcpus"`
	UsedMemoryMB int             `json:"used_memory_mb"`
	UsedDiskMB   int             `json:"used_disk_mb"`
	SandboxCount int             `json:"sandbox_count"`
	Sandboxes    []SandboxReport `json:"sandboxes,omitempty"`
}

// HeartbeatResponse tells the agent how the control plane sees it.
type HeartbeatResponse struct {
	Status     string    `json:"status"`      // ready | draining
	ServerTime time.Time `json:"server_time"` // lets agents notice clock skew
}

// RenewRequest is the body of POST /v1/hosts/{id}/renew.
type RenewRequest struct {
	CSRPEM string `json:"csr_pem"`
}

// RenewResponse carries the renewed certificate.
type RenewResponse struct {
	CertPEM string `json:"cert_pem"`
	CAPEM   string `json:"ca_pem"`
}

type errorBody struct {
	Error string `json:"error"`
}

// Signature headers (see the package comment).
const (
	HeaderCert      = "Hearth-Host-Cert"
	HeaderDate      = "Hearth-Host-Date"
	HeaderSignature = "Hearth-Host-Signature"
	signContext     = "hearth-host-request-v1"
)
