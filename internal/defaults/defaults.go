// Package defaults holds what the zero limits and timeouts of fcgi.Server,
// fcgi.Client and fcgi.Gateway stand for, in one place for the library and
// for the fcgi command, whose flags show them. Each field's documentation
// states its value; TestDefaultsDocumented keeps the two in step.
package defaults

import "time"

// fcgi.Server.
const (
	ServerMaxConns           = 10000
	ServerMaxRequests        = 10000
	ServerMaxRequestsPerConn = 1000
	ServerMaxParamsBytes     = 1 << 20
	ServerMaxBodyBuffer      = 1 << 20
	ServerMaxBufferedBytes   = 64 << 20
	ServerReadTimeout        = time.Minute
	ServerWriteTimeout       = time.Minute
	ServerIdleTimeout        = 2 * time.Minute
)

// fcgi.Client.
const (
	ClientMaxIdleConnsPerBackend = 16
	ClientIdleTimeout            = 30 * time.Second
	ClientDialTimeout            = 10 * time.Second
	ClientWriteTimeout           = time.Minute
	ClientResponseHeaderTimeout  = time.Minute
	ClientReadTimeout            = time.Minute
	ClientProbeTimeout           = 2 * time.Second
	ClientBackendCooldown        = 10 * time.Second
	ClientMaxMultiplexedRequests = 64
	ClientMaxResponseHeaderBytes = 64 << 10
	ClientResolveInterval        = 5 * time.Second
	ClientHealthCheckInterval    = 10 * time.Second
)

// fcgi.Gateway.
const (
	GatewayMaxBodyBytes        = 64 << 20
	GatewayMaxMemoryBytes      = 1 << 20
	GatewayMaxTotalMemoryBytes = 64 << 20
	GatewayMaxParamPairBytes   = 65535
	GatewayBodyReadTimeout     = time.Minute
	GatewaySendTimeout         = time.Minute
)
