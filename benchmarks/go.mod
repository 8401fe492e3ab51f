module github.com/fcgikit/fcgi/benchmarks

go 1.26

require github.com/fcgikit/fcgi v0.0.0

replace github.com/fcgikit/fcgi => ../
