package main

import (
	"context"
	"path/filepath"
	"strings"

	"github.com/fcgikit/fcgi/benchmarks/internal/benchutil"
)

// nginxHTTP is the http-level configuration: one kept-connection upstream
// per backend, all over unix sockets.
const nginxHTTP = `    upstream fcgikit { server unix:{{fcgikit}}; keepalive 32; }
    upstream stdlib  { server unix:{{stdlib}}; keepalive 32; }
    upstream plain   { server unix:{{plain}}; keepalive 32; }

    server {
        listen 127.0.0.1:{{port}};
        server_name localhost;
        location /fcgikit/ {
            fastcgi_pass fcgikit;
            fastcgi_keep_conn on;
            include {{dir}}/fastcgi_params;
        }
        location /stdlib/ {
            fastcgi_pass stdlib;
            fastcgi_keep_conn on;
            include {{dir}}/fastcgi_params;
        }
        location /proxy/ {
            proxy_pass http://plain;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }
    }
`

// startNginx starts nginx in dir with kept upstream connections to the
// servers of s.
func startNginx(ctx context.Context, s *servers, dir string, workers int) (*benchutil.Nginx, error) {
	conf := strings.NewReplacer(
		"{{fcgikit}}", s.fcgikit,
		"{{stdlib}}", s.stdlib,
		"{{plain}}", s.plain,
	).Replace(nginxHTTP)
	return benchutil.StartNginx(ctx, filepath.Clean(dir), workers, conf)
}
