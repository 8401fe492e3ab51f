module github.com/fcgikit/fcgi

go 1.26
