"""Steps as Remote Execution API actions (Buildbarn, BuildBuddy, BuildGrid,
NativeLink): the API's client (reapi), input roots and output trees (tree), and the
remote executor (executor). Every answer of the service is checked as a remote
cache's is: see tree and reapi."""
