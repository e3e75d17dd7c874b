print("alb")
