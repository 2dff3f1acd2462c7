// Command gatesample prints the total of a basket.
package main

import (
	"fmt"

	"example.com/gatesample/lang"
	"example.com/gatesample/shop"
)

var version = "dev"

func main() {
	fmt.Println(version, lang.Preferred("de-CH, en;q=0.5"), shop.Total([]int{250, 300}))
}
