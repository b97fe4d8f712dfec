package e2bapi

import (
	"encoding/json"
	"maps"
	"net/http"
	"slices"

	"github.com/hearth-sandbox/hearth/internal/egress"
)

// ruleJSON is E2B's SandboxNetworkRule as the SDK sends it (a callback
// transform is materialised by the SDK before sending).
type ruleJSON struct {
	Transform *struct {
		Headers map[string]string `json:"headers"`
	} `json:"transform"`
}

// egressRules parses network.rules: domain → rules. A domain's rules are
// applied in order (a later header replaces an earlier one of the same
// name); domains are lower-cased, and one that then repeats is refused
// rather than merged. A domain whose rules set no header is left out (it
// changes nothing, so its traffic is not intercepted).
func egressRules(raw json.RawMessage) ([]egress.HeaderRule, error) {
	if !present(raw) {
		return nil, nil
	}
	var in map[string][]ruleJSON
	if err := json.Unmarshal(raw, &in); err != nil {
		return nil, errStatus(http.StatusBadRequest, `network.rules: must map domain names to lists of {"transform": {"headers": {...}}}`)
	}
	seen := map[string]string{}
	var out []egress.HeaderRule
	for _, key := range slices.Sorted(maps.Keys(in)) {
		d, err := egress.CanonDomain(key)
		if err != nil {
			return nil, errStatus(http.StatusBadRequest, "network.%v", err)
		}
		if prev, ok := seen[d]; ok {
			return nil, errStatus(http.StatusBadRequest, "network.rules: %q and %q name the same domain", prev, key)
		}
		seen[d] = key
		headers := map[string]string{}
		for _, r := range in[key] {
			if r.Transform == nil {
				continue
			}
			for k, v := range r.Transform.Headers {
				if err := egress.ValidHeader(d, k, v); err != nil {
					return nil, errStatus(http.StatusBadRequest, "network.%v", err)
				}
				headers[http.CanonicalHeaderKey(k)] = v
			}
		}
		if len(headers) > 0 {
			out = append(out, egress.HeaderRule{Domain: d, Headers: headers})
		}
	}
	return out, nil
}
