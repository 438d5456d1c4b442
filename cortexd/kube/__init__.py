"""Beyond one host: the images and manifests that run a project on Kubernetes.

    layout.py     where an API's files go inside its image, its tag, its env (pure)
    manifests.py  APISpec -> Deployment/Service/Ingress/HPA or a Knative Service (pure)
    report.py     every Cortex field -> where it went, or why not and what to set instead (pure)
    export.py     `cortexd export kubernetes`: read the project, write DIR atomically (I/O)
    build.py      `cortexd build`: docker-py build on the Docker backend's images, push (I/O)

Nothing cortexd-made runs in the cluster: the image runs predictor_runtime
standalone (predictor_runtime/standalone.py) and `kubectl apply` does the rest.
"""
