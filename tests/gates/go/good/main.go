// Command gatesample prints the total of a basket.
package main

import (
	"fmt"

	"example.com/gatesample/shop"
)

var version = "dev"

func main() {
	fmt.Println(version, shop.Total([]int{250, 300}))
}
