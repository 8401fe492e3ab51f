// Command caddy is Caddy with the standard modules and fcgikit's FastCGI
// transport and php_fcgikit directive: what
//
//	xcaddy build --with github.com/fcgikit/fcgi/caddy
//
// builds, without xcaddy. It takes Caddy's usual commands and flags:
//
//	caddy run --config Caddyfile
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/fcgikit/fcgi/caddy"
)

func main() {
	caddycmd.Main()
}
