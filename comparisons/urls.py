from django.urls import path

from comparisons import views

urlpatterns = [
    path("evaluations/", views.evaluation_list, name="evaluation_list"),
    path("evaluations/<str:name>/", views.comparison_detail, name="comparison_detail"),
    path("evaluations/<str:name>/stats/", views.comparison_stats_detail, name="comparison_stats"),
    path("evaluations/<str:name>/runs/", views.run_search, name="run_search"),
    path("evaluations/<str:name>/export/", views.comparison_export, name="comparison_export"),
    path("evaluations/<str:name>/datapoints/<str:datapoint_id>/", views.datapoint_detail, name="datapoint_detail"),
    path("evaluations/<str:name>/datapoints/<str:datapoint_id>/feedback/", views.feedback_create,
         name="feedback_create"),
    path("evaluations/<str:name>/datapoints/<str:datapoint_id>/feedback/revert/", views.feedback_revert,
         name="feedback_revert"),
    path("runs/<str:run_id>/", views.run_detail, name="run_detail"),
]
