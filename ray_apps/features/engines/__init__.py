"""The engines that run a feature spec: Ray Data, Spark on Ray, incremental."""
