package fcgi

// GatewayBodyMemory returns the bytes of request bodies g holds in memory.
func GatewayBodyMemory(g *Gateway) int64 { return g.bodyMem.Load() }
