// Package deploy holds what Spool needs to run outside this repository's
// local stack: the container image recipe (docker/), the ElasticMQ
// configuration the docker-compose stack uses (elasticmq/), example ECS task
// and service definitions (ecs/) and the container health probe
// (cmd/probe). Its tests load the repository's docker-compose.yml and the
// ECS files and check that they fit together, since no Docker engine is
// needed to catch a wrong port, host name or path.
package deploy
