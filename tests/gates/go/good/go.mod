module example.com/gatesample

go 1.26
