package validation

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
)

// DestinationRule (Istio's ValidateDestinationRule).

func (c *checker) destinationRule(dr *networking.DestinationRule) {
	if dr.Host == "" {
		c.errf("spec.host", "Required value")
	} else if msg := wildcardDomain(dr.Host); msg != "" {
		c.errf("spec.host", "Invalid value: %q: %s", dr.Host, msg)
	}
	if dr.TrafficPolicy != nil {
		c.trafficPolicy("spec.trafficPolicy", dr.TrafficPolicy, true)
	}
	names := map[string]bool{}
	for i, s := range dr.Subsets {
		p := fmt.Sprintf("spec.subsets[%d]", i)
		switch {
		case s.Name == "":
			c.errf(p+".name", "Required value")
		case !isDNS1123Label(s.Name):
			c.errf(p+".name", "Invalid value: %q: subset name must be a DNS-1123 label", s.Name)
		case names[s.Name]:
			c.errf(p+".name", "Duplicate value: %q", s.Name)
		}
		names[s.Name] = true
		c.labels(p+".labels", s.Labels)
		if s.TrafficPolicy != nil {
			c.trafficPolicy(p+".trafficPolicy", s.TrafficPolicy, true)
		}
	}
	if ws := dr.WorkloadSelector; ws != nil {
		c.selector("spec.workloadSelector.matchLabels", ws.MatchLabels)
		c.selectorExportTo(dr.ExportTo)
	}
	c.localityNeedsOutlier(dr)
}

// selectorExportTo refuses, as Istio's validateExportTo for a
// DestinationRule with a workloadSelector, an exportTo other than empty
// (the default), "." or the rule's own namespace: such a rule applies
// only to the proxies of its namespace it selects.
func (c *checker) selectorExportTo(exportTo []string) {
	if len(exportTo) == 0 {
		return
	}
	own, others := false, false
	for _, e := range exportTo {
		if e == "." || e == c.r.Namespace {
			own = true
		} else {
			others = true
		}
	}
	switch {
	case !own:
		c.errf("spec.exportTo", "Invalid value: %q: a DestinationRule with workloadSelector cannot be exported beyond its namespace", exportTo)
	case others:
		c.errf("spec.exportTo", "Invalid value: %q: a DestinationRule with workloadSelector cannot have multiple entries in exportTo", exportTo)
	}
}

// localityNeedsOutlier refuses an enabled loadBalancer.localityLbSetting in
// a policy whose merged outlierDetection is unset (issue 3; Istio only
// warns "outlier detection policy must be provided for failover"): without
// outlier detection no endpoint is ever unhealthy and traffic never fails
// over. A port-level policy replaces the top-level one wholesale; a subset
// inherits the top-level outlierDetection.
func (c *checker) localityNeedsOutlier(dr *networking.DestinationRule) {
	check := func(p string, lb *networking.LoadBalancerSettings, od ...*networking.OutlierDetection) {
		l := lb.GetLocalityLbSetting()
		if l == nil || (l.GetEnabled() != nil && !l.GetEnabled().GetValue()) {
			return
		}
		for _, o := range od {
			if o != nil {
				return
			}
		}
		c.errf(p+".loadBalancer.localityLbSetting", "Required value: outlierDetection must be set with localityLbSetting, or traffic never fails over")
	}
	top := dr.GetTrafficPolicy()
	check("spec.trafficPolicy", top.GetLoadBalancer(), top.GetOutlierDetection())
	for i, pls := range top.GetPortLevelSettings() {
		check(fmt.Sprintf("spec.trafficPolicy.portLevelSettings[%d]", i), pls.GetLoadBalancer(), pls.GetOutlierDetection())
	}
	for i, s := range dr.GetSubsets() {
		tp := s.GetTrafficPolicy()
		p := fmt.Sprintf("spec.subsets[%d].trafficPolicy", i)
		check(p, tp.GetLoadBalancer(), tp.GetOutlierDetection(), top.GetOutlierDetection())
		for j, pls := range tp.GetPortLevelSettings() {
			check(fmt.Sprintf("%s.portLevelSettings[%d]", p, j), pls.GetLoadBalancer(), pls.GetOutlierDetection())
		}
	}
}

func (c *checker) trafficPolicy(p string, tp *networking.TrafficPolicy, portLevel bool) {
	if tp.LoadBalancer == nil && tp.ConnectionPool == nil && tp.OutlierDetection == nil && tp.Tls == nil &&
		len(tp.PortLevelSettings) == 0 && tp.Tunnel == nil && tp.ProxyProtocol == nil && tp.RetryBudget == nil {
		c.errf(p, "Invalid value: traffic policy must have at least one field")
	}
	c.loadBalancer(p+".loadBalancer", tp.LoadBalancer)
	c.connectionPool(p+".connectionPool", tp.ConnectionPool)
	c.outlierDetection(p+".outlierDetection", tp.OutlierDetection)
	c.clientTLS(p+".tls", tp.Tls)
	if tp.Tunnel != nil && tp.ProxyProtocol != nil {
		// Istio's validateTrafficPolicy: the tunnel's HTTP proxy would
		// get the PROXY header meant for the destination.
		c.errf(p, "Invalid value: tunnel and proxyProtocol must not be set together")
	}
	if t := tp.Tunnel; t != nil {
		if t.Protocol != "" && t.Protocol != "CONNECT" && t.Protocol != "POST" {
			c.errf(p+".tunnel.protocol", "Unsupported value: %q: supported values: \"CONNECT\", \"POST\"", t.Protocol)
		}
		if t.TargetHost == "" {
			c.errf(p+".tunnel.targetHost", "Required value")
		} else if msg := tunnelTargetHost(t.TargetHost); msg != "" {
			c.errf(p+".tunnel.targetHost", "Invalid value: %q: %s", t.TargetHost, msg)
		}
		c.port(p+".tunnel.targetPort", t.TargetPort, false)
	}
	if pp := tp.ProxyProtocol; pp != nil {
		if _, ok := networking.TrafficPolicy_ProxyProtocol_VERSION_name[int32(pp.Version)]; !ok {
			c.errf(p+".proxyProtocol.version", "Unsupported value: %d: supported values: \"V1\", \"V2\"", pp.Version)
		}
	}
	if rb := tp.RetryBudget; rb != nil {
		if rb.Percent != nil && (rb.Percent.Value < 0 || rb.Percent.Value > 100) {
			c.errf(p+".retryBudget.percent", "Invalid value: %v: must be between 0 and 100", rb.Percent.Value)
		}
		// The Loom proxy counts the requests outstanding now only, as
		// Envoy does with budget_interval 0; a window is not served.
		if d := rb.BudgetInterval; d != nil && (!d.IsValid() || d.AsDuration() != 0) {
			c.errf(p+".retryBudget.budgetInterval", "%s (only 0s: the budget counts the requests outstanding now)", Unsupported)
		}
	}
	if !portLevel && len(tp.PortLevelSettings) > 0 {
		c.errf(p+".portLevelSettings", "Forbidden: not allowed here")
	}
	ports := map[uint32]bool{}
	for i, pls := range tp.PortLevelSettings {
		pp := fmt.Sprintf("%s.portLevelSettings[%d]", p, i)
		if pls.Port == nil {
			c.errf(pp+".port", "Required value: port must be specified")
		} else {
			c.port(pp+".port.number", pls.Port.Number, false)
			if ports[pls.Port.Number] {
				c.errf(pp+".port.number", "Duplicate value: %d", pls.Port.Number)
			}
			ports[pls.Port.Number] = true
		}
		if pls.LoadBalancer == nil && pls.ConnectionPool == nil && pls.OutlierDetection == nil && pls.Tls == nil {
			c.errf(pp, "Invalid value: port traffic policy must have at least one field")
		}
		c.loadBalancer(pp+".loadBalancer", pls.LoadBalancer)
		c.connectionPool(pp+".connectionPool", pls.ConnectionPool)
		c.outlierDetection(pp+".outlierDetection", pls.OutlierDetection)
		c.clientTLS(pp+".tls", pls.Tls)
	}
}

func (c *checker) loadBalancer(p string, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	if ch := lb.GetConsistentHash(); ch != nil {
		if n := ch.GetMinimumRingSize(); n > maxRingSize { //nolint:staticcheck // deprecated field still honoured.
			c.errf(p+".consistentHash.minimumRingSize", "Invalid value: %d: must be at most %d", n, maxRingSize)
		}
		if n := ch.GetRingHash().GetMinimumRingSize(); n > maxRingSize {
			c.errf(p+".consistentHash.ringHash.minimumRingSize", "Invalid value: %d: must be at most %d", n, maxRingSize)
		}
		// Istio's validateLoadBalancer: the deprecated minimumRingSize
		// excludes ringHash and maglev, and maglev needs a prime tableSize
		// below Envoy's bound.
		if ch.GetMinimumRingSize() != 0 && ch.GetHashAlgorithm() != nil { //nolint:staticcheck // deprecated field still honoured.
			c.errf(p+".consistentHash.minimumRingSize", "Invalid value: only one of minimumRingSize or maglev/ringHash can be specified")
		}
		if m := ch.GetMaglev(); m != nil {
			switch {
			case m.TableSize == 0:
				c.errf(p+".consistentHash.maglev.tableSize", "Required value: tableSize must be set for maglev")
			case m.TableSize >= maxMaglevTableSize || !isPrime(m.TableSize):
				c.errf(p+".consistentHash.maglev.tableSize", "Invalid value: %d: must be a prime number less than %d", m.TableSize, maxMaglevTableSize)
			}
		}
		if cookie := ch.GetHttpCookie(); cookie != nil {
			if cookie.Name == "" {
				c.errf(p+".consistentHash.httpCookie.name", "Required value")
			}
			if cookie.Ttl != nil && (cookie.Ttl.AsDuration() < 0 || !cookie.Ttl.IsValid()) {
				c.errf(p+".consistentHash.httpCookie.ttl", "Invalid value: must not be negative")
			}
			// The proxy writes each attribute into Set-Cookie as
			// "; name=value"; what would break that header is refused here
			// rather than NACKed by the proxy.
			for i, a := range cookie.Attributes {
				ap := fmt.Sprintf("%s.consistentHash.httpCookie.attributes[%d]", p, i)
				if !httpguts.ValidHeaderFieldName(a.Name) {
					c.errf(ap+".name", "Invalid value: %q: must be a non-empty token", a.Name)
				}
				if !httpguts.ValidHeaderFieldValue(a.Value) || strings.ContainsRune(a.Value, ';') {
					c.errf(ap+".value", "Invalid value: %q: must be a header value without ';'", a.Value)
				}
			}
		}
		if ch.GetHttpHeaderName() == "" {
			if _, ok := ch.HashKey.(*networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName); ok {
				c.errf(p+".consistentHash.httpHeaderName", "Required value")
			}
		}
		if ch.HashKey == nil {
			c.errf(p+".consistentHash", "Required value: one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName")
		}
	}
	if w := lb.Warmup; w != nil {
		wp := p + ".warmup"
		if w.Duration == nil {
			c.errf(wp+".duration", "Required value")
		} else {
			c.duration(wp+".duration", w.Duration)
		}
		if w.MinimumPercent != nil && (w.MinimumPercent.Value < 0 || w.MinimumPercent.Value > 100) {
			c.errf(wp+".minimumPercent", "Invalid value: %v: must be between 0 and 100", w.MinimumPercent.Value)
		}
		if w.Aggression != nil && w.Aggression.Value < 1 {
			c.errf(wp+".aggression", "Invalid value: %v: must be at least 1", w.Aggression.Value)
		}
	}
	if lb.WarmupDurationSecs != nil {
		c.duration(p+".warmupDurationSecs", lb.WarmupDurationSecs)
		if lb.Warmup != nil {
			c.errf(p+".warmupDurationSecs", "Invalid value: only one of warmupDurationSecs or warmup may be set")
		}
	}
	// Envoy's zone-aware routing (zone_aware_lb_config) and client-side
	// weighted round robin on ORCA reports (backendUtilization) are not in
	// the Loom proxy's balancer.
	if lb.ZoneAwareLbSetting != nil {
		c.errf(p+".zoneAwareLbSetting", "%s (use localityLbSetting)", Unsupported)
	}
	if lb.GetBackendUtilization() != nil {
		c.unsupported(p + ".backendUtilization")
	}
	c.localityLbSetting(p+".localityLbSetting", lb.LocalityLbSetting)
}

// localityLbSetting checks a LocalityLoadBalancerSetting as Istio's
// ValidateLocalityLbSetting: distribute and failover exclude each other;
// failover excludes the topology labels in failoverPriority; each
// distribute weight is 1-100 and each entry's weights sum to 100; the
// distribute localities are well formed and do not overlap
// (localities); a failover names two different regions, without '/' or
// '*'.
func (c *checker) localityLbSetting(p string, l *networking.LocalityLoadBalancerSetting) {
	if l == nil {
		return
	}
	if len(l.Distribute) > 0 && len(l.Failover) > 0 {
		c.errf(p, "Invalid value: can not simultaneously specify 'distribute' and 'failover'")
		return
	}
	if len(l.Failover) > 0 {
		for i, lbl := range l.FailoverPriority {
			switch lbl {
			case "topology.kubernetes.io/region", "topology.kubernetes.io/zone", "topology.istio.io/subzone":
				c.errf(fmt.Sprintf("%s.failoverPriority[%d]", p, i), "Invalid value: %q: can not simultaneously set 'failover' and a topology label in 'failoverPriority'", lbl)
			}
		}
	}
	var fromPaths, froms []string
	for i, d := range l.Distribute {
		dp := fmt.Sprintf("%s.distribute[%d]", p, i)
		fromPaths, froms = append(fromPaths, dp+".from"), append(froms, d.From)
		var sum uint32
		var toPaths, tos []string
		bad := false
		for _, k := range sortedKeys(d.To) {
			w := d.To[k]
			if w == 0 || w > 100 {
				c.errf(fmt.Sprintf("%s.to[%s]", dp, k), "Invalid value: %d: locality weight must be in range [1, 100]", w)
				bad = true
			}
			sum += w
			toPaths, tos = append(toPaths, fmt.Sprintf("%s.to[%s]", dp, k)), append(tos, k)
		}
		if !bad && sum != 100 {
			c.errf(dp+".to", "Invalid value: total weight %d != 100", sum)
		}
		c.localities(toPaths, tos)
	}
	c.localities(fromPaths, froms)
	for i, f := range l.Failover {
		fp := fmt.Sprintf("%s.failover[%d]", p, i)
		if f.From == f.To {
			c.errf(fp, "Invalid value: %q: locality lb failover settings must specify different regions", f.From)
		}
		if strings.Contains(f.From, "/") || strings.Contains(f.To, "/") {
			c.errf(fp, "Invalid value: from %q to %q: locality lb failover must only specify regions", f.From, f.To)
		}
		if strings.Contains(f.From, "*") || strings.Contains(f.To, "*") {
			c.errf(fp, "Invalid value: from %q to %q: locality lb failover region should not contain '*' wildcard", f.From, f.To)
		}
	}
}

// localities checks locs (at paths) as Istio's validateLocalities: a '*'
// only once and last, no empty region, zone or subzone, and none
// overlapping one listed before it ("us-east/*" covers a later
// "us-east/zone1"; "*" covers everything after it).
func (c *checker) localities(paths, locs []string) {
	const any = "*"
	seen := map[string]map[string]map[string]bool{} // region -> zone -> subzone
	for i, loc := range locs {
		p := paths[i]
		if n := strings.Count(loc, "*"); n > 1 || (n == 1 && !strings.HasSuffix(loc, "*")) {
			c.errf(p, "Invalid value: %q: locality wildcard '*' can appear only once, at the end", loc)
			continue
		}
		overlap := func() { c.errf(p, "Invalid value: %q: locality overlaps with previously specified ones", loc) }
		if _, ok := seen[any]; ok {
			overlap()
			continue
		}
		parts := strings.SplitN(loc, "/", 3)
		if slices.Contains(parts, "") {
			c.errf(p, "Invalid value: %q: locality must not contain an empty region, zone or subzone", loc)
			continue
		}
		region := parts[0]
		zones, ok := seen[region]
		switch len(parts) {
		case 1:
			if ok {
				overlap()
				continue
			}
			seen[region] = map[string]map[string]bool{any: {any: true}}
		case 2:
			if !ok {
				seen[region] = map[string]map[string]bool{parts[1]: {any: true}}
				continue
			}
			_, all := zones[any]
			_, dup := zones[parts[1]]
			if all || dup {
				overlap()
				continue
			}
			zones[parts[1]] = map[string]bool{any: true}
		case 3:
			zone, sub := parts[1], parts[2]
			if !ok {
				seen[region] = map[string]map[string]bool{zone: {sub: true}}
				continue
			}
			if _, all := zones[any]; all {
				overlap()
				continue
			}
			subs, ok := zones[zone]
			if !ok {
				zones[zone] = map[string]bool{sub: true}
				continue
			}
			if subs[any] || subs[sub] {
				overlap()
				continue
			}
			subs[sub] = true
		}
	}
}

func (c *checker) connectionPool(p string, cp *networking.ConnectionPoolSettings) {
	if cp == nil {
		return
	}
	if cp.Tcp == nil && cp.Http == nil {
		c.errf(p, "Invalid value: must set either tcp or http settings")
	}
	if t := cp.Tcp; t != nil {
		if t.MaxConnections < 0 {
			c.errf(p+".tcp.maxConnections", "Invalid value: %d: must not be negative", t.MaxConnections)
		}
		c.duration(p+".tcp.connectTimeout", t.ConnectTimeout)
		c.duration(p+".tcp.maxConnectionDuration", t.MaxConnectionDuration)
		c.duration(p+".tcp.idleTimeout", t.IdleTimeout)
		if ka := t.TcpKeepalive; ka != nil {
			// Envoy's TcpKeepalive takes whole seconds.
			c.keepaliveSeconds(p+".tcp.tcpKeepalive.time", ka.Time)
			c.keepaliveSeconds(p+".tcp.tcpKeepalive.interval", ka.Interval)
		}
	}
	if h := cp.Http; h != nil {
		for _, f := range []struct {
			name string
			v    int32
		}{
			{"http1MaxPendingRequests", h.Http1MaxPendingRequests},
			{"http2MaxRequests", h.Http2MaxRequests},
			{"maxRequestsPerConnection", h.MaxRequestsPerConnection},
			{"maxRetries", h.MaxRetries},
			{"maxConcurrentStreams", h.MaxConcurrentStreams},
		} {
			if f.v < 0 {
				c.errf(p+".http."+f.name, "Invalid value: %d: must not be negative", f.v)
			}
		}
		c.duration(p+".http.idleTimeout", h.IdleTimeout)
		if h.H2UpgradePolicy == networking.ConnectionPoolSettings_HTTPSettings_UPGRADE && h.UseClientProtocol {
			// Istio's validateConnectionPool.
			c.errf(p+".http.useClientProtocol", "Invalid value: use client protocol must not be true when H2UpgradePolicy is UPGRADE")
		}
		if ka := h.Http2KeepAlive; ka != nil {
			// Both are required (istio.io/api); Envoy's
			// connection_keepalive needs the timeout, and the Loom proxy
			// the interval (it pings quiet connections only).
			for _, f := range []struct {
				name string
				d    *durationpb.Duration
			}{{"interval", ka.Interval}, {"timeout", ka.Timeout}} {
				if f.d == nil {
					c.errf(p+".http.http2KeepAlive."+f.name, "Required value")
				} else {
					c.duration(p+".http.http2KeepAlive."+f.name, f.d)
				}
			}
		}
	}
}

func (c *checker) outlierDetection(p string, od *networking.OutlierDetection) {
	if od == nil {
		return
	}
	if od.ConsecutiveErrors < 0 {
		c.errf(p+".consecutiveErrors", "Invalid value: %d: must not be negative", od.ConsecutiveErrors)
	}
	c.duration(p+".interval", od.Interval)
	c.duration(p+".baseEjectionTime", od.BaseEjectionTime)
	if od.MaxEjectionPercent < 0 || od.MaxEjectionPercent > 100 {
		c.errf(p+".maxEjectionPercent", "Invalid value: %d: must be between 0 and 100", od.MaxEjectionPercent)
	}
	if od.MinHealthPercent < 0 || od.MinHealthPercent > 100 {
		c.errf(p+".minHealthPercent", "Invalid value: %d: must be between 0 and 100", od.MinHealthPercent)
	}
	// The Loom proxy's outlier detection runs the consecutive-failure
	// detectors only and counts 5xx as Envoy does by default.
	if od.FailurePercentageThreshold != nil {
		c.errf(p+".failurePercentageThreshold", "%s (only consecutive-error ejection is)", Unsupported)
	}
	if len(od.OutlierDetectionHttpErrorCodes) > 0 {
		c.errf(p+".outlierDetectionHttpErrorCodes", "%s (5xx responses are the errors)", Unsupported)
	}
	if od.ConsecutiveLocalOriginFailures != nil && !od.SplitExternalLocalOriginErrors {
		c.errf(p+".consecutiveLocalOriginFailures", "Invalid value: requires splitExternalLocalOriginErrors: true")
	}
}

func (c *checker) clientTLS(p string, t *networking.ClientTLSSettings) {
	if t == nil {
		return
	}
	switch t.Mode {
	case networking.ClientTLSSettings_MUTUAL:
		if t.CredentialName == "" {
			if t.ClientCertificate == "" {
				c.errf(p+".clientCertificate", "Required value: client certificate required for mutual tls")
			}
			if t.PrivateKey == "" {
				c.errf(p+".privateKey", "Required value: private key required for mutual tls")
			}
		}
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		if t.ClientCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "" || t.CredentialName != "" {
			c.errf(p, "Invalid value: cannot specify certificates, keys or credentialName with mode ISTIO_MUTUAL")
		}
	}
	if t.CredentialName != "" && (t.ClientCertificate != "" || t.PrivateKey != "" || t.CaCertificates != "") {
		c.errf(p+".credentialName", "Invalid value: %q: cannot specify client certificates or CA certificate if credentialName is set", t.CredentialName)
	}
	// loomd serves a Secret to the proxies of its own namespace only.
	if strings.Contains(t.CredentialName, "/") {
		c.errf(p+".credentialName", "Invalid value: %q: a credential in another namespace is %s (the Secret must be in the proxy's namespace)", t.CredentialName, Unsupported)
	}
	if t.CaCrl != "" {
		c.unsupported(p + ".caCrl")
	}
}

// maxRingSize is Envoy's bound on ring_hash_lb_config.minimum_ring_size.
const maxRingSize = 8 * 1024 * 1024

// maxMaglevTableSize is Envoy's bound on maglev_lb_config.table_size, which
// must also be prime.
const maxMaglevTableSize = 5000011

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// keepaliveSeconds checks a TCP keepalive time or interval: a valid
// duration of at least 1s (Envoy counts whole seconds; less would be 0).
func (c *checker) keepaliveSeconds(p string, d *durationpb.Duration) {
	if d == nil {
		return
	}
	if !d.IsValid() || d.AsDuration() < time.Second {
		c.errf(p, "Invalid value: %s: must be at least 1s", d.AsDuration())
	}
}

// tunnelTargetHost checks a tunnel's targetHost as Istio's
// validateTunnelSettings: an IP address, or an FQDN whose top-level label
// is not all digits (ValidateFQDN). It returns "" when h is valid.
func tunnelTargetHost(h string) string {
	if _, err := netip.ParseAddr(h); err == nil {
		return ""
	}
	if msg := fqdn(h); msg != "" {
		return "must be a valid FQDN or IP address: " + msg
	}
	labels := strings.Split(strings.TrimSuffix(h, "."), ".")
	if tld := labels[len(labels)-1]; strings.Trim(tld, "0123456789") == "" {
		return fmt.Sprintf("must be a valid FQDN or IP address: top level domain %q cannot be all-numeric", tld)
	}
	return ""
}
