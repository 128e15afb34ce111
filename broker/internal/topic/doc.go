// Package topic implements the binding matcher of AMQP 0-9-1 topic
// exchanges with RabbitMQ's semantics, as a trie whose matching cost depends
// on the routing key and on the bindings that match it, not on how many
// bindings there are.
//
// Routing keys and binding patterns are split into words on '.'. Empty words
// are legal: "a..b" has the words "a", "", "b" and "a." has "a", "". As in
// RabbitMQ (rabbit_db_topic_exchange:split_topic_key), the empty string has
// no words at all, so pattern "" and pattern "#" match routing key "", while
// pattern "*" does not. In a pattern the word "*" matches exactly one word
// and the word "#" matches zero or more words; "#" may appear any number of
// times and anywhere. Other words match byte for byte. No pattern is
// invalid.
package topic
